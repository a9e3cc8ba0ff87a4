{{- define "workerfleet.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "workerfleet.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "workerfleet.serviceAccountName" -}}
{{- default (include "workerfleet.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "workerfleet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "workerfleet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The selector labels as a label selector string: name=value,name=value. */}}
{{- define "workerfleet.selector" -}}
{{- $pairs := list -}}
{{- range $key, $value := include "workerfleet.selectorLabels" . | fromYaml -}}
{{- $pairs = append $pairs (printf "%s=%s" $key $value) -}}
{{- end -}}
{{- join "," $pairs -}}
{{- end -}}

{{- define "workerfleet.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "workerfleet.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "workerfleet.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The metrics API Service's name; the APIService and the serving certificate both name it. */}}
{{- define "workerfleet.metricsApiService" -}}
{{- printf "%s-metrics-api" (include "workerfleet.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The Secret holding the metrics API's serving certificate: the given one, or the one the chart makes. */}}
{{- define "workerfleet.metricsApiCertificateSecret" -}}
{{- .Values.metricsApi.certificateSecret | default (printf "%s-tls" (include "workerfleet.metricsApiService" .)) -}}
{{- end -}}

{{/* Whether the operator's /metrics listens beyond the pod's loopback, for Prometheus to scrape. */}}
{{- define "workerfleet.metricsExposed" -}}
{{- if not (has .Values.metrics.address (list "127.0.0.1" "::1" "localhost")) -}}true{{- end -}}
{{- end -}}

{{/* The operator's user name as the API server sees it (its ServiceAccount in the release namespace). */}}
{{- define "workerfleet.operatorUser" -}}
system:serviceaccount:{{ .Release.Namespace }}:{{ include "workerfleet.serviceAccountName" . }}
{{- end -}}
