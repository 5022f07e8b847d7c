{{/* Chart name, overridable. */}}
{{- define "strake.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Base name of every object; components append -operator or -proxy, so it is
kept short enough for both suffixes within 63 characters.
*/}}
{{- define "strake.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 54 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 54 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 54 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "strake.operator.fullname" -}}
{{- printf "%s-operator" (include "strake.fullname" .) }}
{{- end }}

{{- define "strake.proxy.fullname" -}}
{{- printf "%s-proxy" (include "strake.fullname" .) }}
{{- end }}

{{/* Selector labels; call with (dict "root" $ "component" "operator"). */}}
{{- define "strake.selectorLabels" -}}
app.kubernetes.io/name: {{ include "strake.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Labels of every object; call with (dict "root" $ "component" "operator"). */}}
{{- define "strake.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "strake.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: strake
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- end }}

{{/* Image reference; call with (dict "root" $ "image" .Values.operator.image). */}}
{{- define "strake.image" -}}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) }}
{{- end }}
{{- end }}

{{- define "strake.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (include "strake.operator.fullname" .) .Values.operator.serviceAccount.name }}
{{- else }}
{{- required "operator.serviceAccount.name is required when operator.serviceAccount.create is false" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "strake.proxy.serviceAccountName" -}}
{{- if .Values.proxy.serviceAccount.create }}
{{- default (include "strake.proxy.fullname" .) .Values.proxy.serviceAccount.name }}
{{- else }}
{{- required "proxy.serviceAccount.name is required when proxy.serviceAccount.create is false" .Values.proxy.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Marks the Services of the admin ports, which the ServiceMonitors select. */}}
{{- define "strake.adminServiceLabel" -}}
strake.sh/service: admin
{{- end }}

{{/* The peer allowed to scrape metrics, for the NetworkPolicies. */}}
{{- define "strake.networkPolicy.metricsPeer" -}}
- namespaceSelector:
    {{- toYaml .Values.networkPolicy.metrics.namespaceSelector | nindent 4 }}
  podSelector:
    {{- toYaml .Values.networkPolicy.metrics.podSelector | nindent 4 }}
{{- end }}

{{/* Egress both components need: DNS and the API server. */}}
{{- define "strake.networkPolicy.baseEgress" -}}
{{- with .Values.networkPolicy.dns }}
{{- if .enabled }}
- to:
    {{- toYaml .to | nindent 4 }}
  ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
{{- end }}
{{- end }}
- to:
    {{- range .Values.networkPolicy.apiServer.cidrs }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
  ports:
    {{- range .Values.networkPolicy.apiServer.ports }}
    - port: {{ . }}
      protocol: TCP
    {{- end }}
{{- end }}
