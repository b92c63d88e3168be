{{/* Names and labels shared by every template. */}}
{{- define "fleetsync.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "fleetsync.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app.kubernetes.io/name: fleetsync
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "fleetsync.selectorLabels" -}}
app.kubernetes.io/name: fleetsync
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end -}}

{{- define "fleetsync.serviceAccountName" -}}
{{- default (printf "%s-controller" (include "fleetsync.fullname" .)) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "fleetsync.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The namespaces that get worker ServiceAccounts and, in namespaced mode, Roles. */}}
{{- define "fleetsync.workerNamespaces" -}}
{{- if .Values.watchNamespaces -}}
{{- join "," .Values.watchNamespaces -}}
{{- else -}}
{{- .Release.Namespace -}}
{{- end -}}
{{- end -}}

{{/* What the controller may do in a watched namespace; each rule says why. */}}
{{- define "fleetsync.namespacedRules" }}
  # Watch the runs and schedules; create runs for schedules; delete finished runs
  # (ttlSecondsAfterFinished, history limits, concurrencyPolicy Replace).
  - apiGroups: [fleetsync.dev]
    resources: [syncjobs, syncschedules]
    verbs: [get, list, watch, create, delete]
  # Write progress, conditions and schedule times.
  - apiGroups: [fleetsync.dev]
    resources: [syncjobs/status, syncschedules/status]
    verbs: [patch]
  # One Indexed Job per run; patch changes parallelism and suspend; delete releases the
  # pods of a run whose namespace is being deleted (see Controller._release_terminating).
  - apiGroups: [batch]
    resources: [jobs]
    verbs: [get, list, watch, create, patch, delete]
  # Read pods to map a reporting pod to its run and shard, and to see pods that cannot start.
  - apiGroups: [""]
    resources: [pods]
    verbs: [get, list, watch]
  # The run's config and its persisted progress (checkpoints), both owned by the SyncJob.
  - apiGroups: [""]
    resources: [configmaps]
    verbs: [get, create, patch]
  # Events on phase changes and breaker transitions; list: a pod's FailedMount warnings
  # name the Secret a stuck run is missing.
  - apiGroups: ["", events.k8s.io]
    resources: [events]
    verbs: [create, patch, list]
{{- end }}
