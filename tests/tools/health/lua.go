package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	lua "github.com/yuin/gopher-lua"
)

// argoVerdict runs script as Argo CD's ExecuteHealthLua does (util/lua/lua.go).
func argoVerdict(object map[string]interface{}, script string) (argoHealth, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	// Argo CD also loads a "safe" os library of its own; fleetsync's script needs none.
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
	} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.open), NRet: 0, Protect: true},
			lua.LString(lib.name)); err != nil {
			return argoHealth{}, err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", decodeValue(l, object))
	if err := l.DoString(script); err != nil {
		return argoHealth{}, err
	}
	ret := l.Get(-1)
	if ret.Type() != lua.LTTable {
		return argoHealth{}, fmt.Errorf("expect table output from Lua script, not %s", ret.Type())
	}
	encoded, err := encodeValue(ret)
	if err != nil {
		return argoHealth{}, err
	}
	text, err := json.Marshal(encoded)
	if err != nil {
		return argoHealth{}, err
	}
	var h argoHealth
	if err := json.Unmarshal(text, &h); err != nil {
		return argoHealth{}, err
	}
	if !argoCodes[h.Status] {
		return argoHealth{Status: "Unknown", Message: "Lua returned an invalid health status"}, nil
	}
	return h, nil
}

// decodeValue is Argo CD's conversion of an unstructured object into Lua values: maps and
// slices become tables, numbers (float64 or the int64 of the unstructured scheme) LNumber,
// json.Number a string, anything else nil.
func decodeValue(l *lua.LState, value interface{}) lua.LValue {
	switch v := value.(type) {
	case bool:
		return lua.LBool(v)
	case float64:
		return lua.LNumber(v)
	case string:
		return lua.LString(v)
	case json.Number:
		return lua.LString(v)
	case int:
		return lua.LNumber(v)
	case int32:
		return lua.LNumber(v)
	case int64:
		return lua.LNumber(v)
	case []interface{}:
		arr := l.CreateTable(len(v), 0)
		for _, item := range v {
			arr.Append(decodeValue(l, item))
		}
		return arr
	case map[string]interface{}:
		tbl := l.CreateTable(0, len(v))
		for key, item := range v {
			tbl.RawSetH(lua.LString(key), decodeValue(l, item))
		}
		return tbl
	}
	return lua.LNil
}

var errKey = errors.New("cannot encode a table with non-string keys as a JSON object")

// encodeValue mirrors layeh.com/gopher-json's Encode, which Argo CD uses on the returned
// table: a table with an array part is a JSON array, an empty table too ("[]", which then
// fails to unmarshal into a health status), else an object with string keys.
func encodeValue(value lua.LValue) (interface{}, error) {
	switch v := value.(type) {
	case lua.LBool:
		return bool(v), nil
	case lua.LNumber:
		return float64(v), nil
	case lua.LString:
		return string(v), nil
	case *lua.LNilType:
		return nil, nil
	case *lua.LTable:
		if v.MaxN() > 0 || isEmpty(v) {
			arr := make([]interface{}, 0, v.MaxN())
			for i := 1; i <= v.MaxN(); i++ {
				item, err := encodeValue(v.RawGetInt(i))
				if err != nil {
					return nil, err
				}
				arr = append(arr, item)
			}
			return arr, nil
		}
		obj := map[string]interface{}{}
		var failure error
		v.ForEach(func(key, item lua.LValue) {
			name, ok := key.(lua.LString)
			if !ok {
				failure = errKey
				return
			}
			encoded, err := encodeValue(item)
			if err != nil {
				failure = err
				return
			}
			obj[string(name)] = encoded
		})
		return obj, failure
	}
	return nil, fmt.Errorf("cannot encode %s to JSON", value.Type())
}

func isEmpty(t *lua.LTable) bool {
	key, _ := t.Next(lua.LNil)
	return key == lua.LNil
}
