// Command health prints the verdicts GitOps tools reach on Kubernetes objects, computed with
// the libraries those tools embed, so the e2e suite checks fleetsync's status against the
// real rules rather than a re-implementation of them:
//
//   - kstatus (sigs.k8s.io/cli-utils/pkg/kstatus/status), which Flux, kpt and Helm 4
//     `--wait` use;
//   - an Argo CD Lua health script, run with gopher-lua the way Argo CD's util/lua runs it:
//     only the package, base and table libraries open (resource.customizations scripts run
//     without the standard library unless useOpenLibs is set), a 1 s time limit, the object
//     as the global `obj` (converted as Argo CD's decodeValue does), and the returned table
//     read back through JSON into {status, message}. Argo CD turns a script error or an
//     unknown status into Unknown; so does this tool.
//
// Input on stdin: JSON objects (one, a `kind: List`, or several one after another).
// Output: one JSON line per object with kind, name, kstatus, kstatusMessage, argo and
// argoMessage. Exit status 1 on unreadable input or a missing script, 0 otherwise.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

// Verdict is one output line.
type Verdict struct {
	Kind           string `json:"kind"`
	Name           string `json:"name"`
	Kstatus        string `json:"kstatus"`
	KstatusMessage string `json:"kstatusMessage"`
	Argo           string `json:"argo"`
	ArgoMessage    string `json:"argoMessage"`
}

// argoHealth is Argo CD's HealthStatus as its Lua runner unmarshals it.
type argoHealth struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

// Argo CD's valid health codes (gitops-engine pkg/health); anything else becomes Unknown.
var argoCodes = map[string]bool{
	"Unknown": true, "Progressing": true, "Suspended": true,
	"Healthy": true, "Degraded": true, "Missing": true,
}

func main() {
	script := flag.String("lua", "", "path of the Argo CD health script (required)")
	flag.Parse()
	if err := run(*script, os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "health:", err)
		os.Exit(1)
	}
}

func run(scriptPath string, in io.Reader, out io.Writer) error {
	if scriptPath == "" {
		return errors.New("-lua: the health script's path is required")
	}
	script, err := os.ReadFile(scriptPath)
	if err != nil {
		return fmt.Errorf("-lua: %w", err)
	}
	objects, err := readObjects(in)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(out)
	defer w.Flush()
	enc := json.NewEncoder(w)
	for _, obj := range objects {
		if err := enc.Encode(judge(obj, string(script))); err != nil {
			return err
		}
	}
	return nil
}

// readObjects decodes every JSON document on in, flattening lists. The unstructured JSON
// scheme keeps integers as int64, as in a controller's informer cache (kstatus needs that
// for metadata.generation and status.observedGeneration).
func readObjects(in io.Reader) ([]*unstructured.Unstructured, error) {
	dec := json.NewDecoder(in)
	var objects []*unstructured.Unstructured
	for {
		var raw json.RawMessage
		if err := dec.Decode(&raw); errors.Is(err, io.EOF) {
			return objects, nil
		} else if err != nil {
			return nil, fmt.Errorf("stdin: %w", err)
		}
		decoded, _, err := unstructured.UnstructuredJSONScheme.Decode(raw, nil, nil)
		if err != nil {
			return nil, fmt.Errorf("stdin: object %d: %w", len(objects)+1, err)
		}
		switch o := decoded.(type) {
		case *unstructured.UnstructuredList:
			for i := range o.Items {
				objects = append(objects, &o.Items[i])
			}
		case *unstructured.Unstructured:
			objects = append(objects, o)
		default:
			return nil, fmt.Errorf("stdin: object %d: unexpected %T", len(objects)+1, decoded)
		}
	}
}

func judge(obj *unstructured.Unstructured, script string) Verdict {
	v := Verdict{Kind: obj.GetKind(), Name: obj.GetName()}
	if res, err := status.Compute(obj); err != nil {
		v.Kstatus, v.KstatusMessage = "Error", err.Error()
	} else {
		v.Kstatus, v.KstatusMessage = res.Status.String(), res.Message
	}
	h, err := argoVerdict(obj.Object, script)
	if err != nil {
		// gitops-engine's GetResourceHealth: a failing override reads Unknown.
		h = argoHealth{Status: "Unknown", Message: err.Error()}
	}
	v.Argo, v.ArgoMessage = h.Status, h.Message
	return v
}
