{{/*
Names, labels, images, identity plumbing and the normalized pool list shared by the templates.
*/}}

{{- define "antwort.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "antwort.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "antwort.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "antwort.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "antwort.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "antwort.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: antwort
{{- end }}

{{/* Selector labels of one component: (dict "ctx" $ "component" "gateway") */}}
{{- define "antwort.selectorLabels" -}}
app.kubernetes.io/name: {{ include "antwort.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "antwort.componentLabels" -}}
{{ include "antwort.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "antwort.sandboxNamespace" -}}
{{- default (printf "%s-sandboxes" .Release.Namespace) .Values.sandbox.namespace }}
{{- end }}

{{- define "antwort.gatewayServiceAccount" -}}
{{- printf "%s-gateway" (include "antwort.fullname" .) }}
{{- end }}

{{- define "antwort.poolManagerServiceAccount" -}}
{{- printf "%s-pool-manager" (include "antwort.fullname" .) }}
{{- end }}

{{/* The ServiceAccount sandbox pods run as, in the sandbox namespace (never a token). */}}
{{- define "antwort.sandboxServiceAccount" -}}
{{- printf "%s-sandbox" (include "antwort.fullname" .) }}
{{- end }}

{{/*
The SPIFFE ID every sandbox agent presents: the one the gateway accepts (agent_spiffe_ids), the
pool manager expects (runtime.service_account) and the issuer of spiffe.mode gives the pods.
*/}}
{{- define "antwort.sandboxSpiffeId" -}}
{{- printf "spiffe://%s/ns/%s/sa/%s" .Values.spiffe.trustDomain (include "antwort.sandboxNamespace" .) (include "antwort.sandboxServiceAccount" .) }}
{{- end }}

{{/* The files-mode Secret with the sandboxes' SVID, in the sandbox namespace. */}}
{{- define "antwort.sandboxSecret" -}}
{{- default (printf "%s-sandbox-svid" (include "antwort.fullname" .)) .Values.spiffe.files.sandboxSecret }}
{{- end }}

{{/* spiffe://<trust domain>/ns/<namespace>/sa/<service account>: (dict "ctx" $ "sa" "name") */}}
{{- define "antwort.spiffeId" -}}
{{- printf "spiffe://%s/ns/%s/sa/%s" .ctx.Values.spiffe.trustDomain .ctx.Release.Namespace .sa }}
{{- end }}

{{/* An image reference: (dict "ctx" $ "image" .Values.gateway.image "name" "antwort-gateway") */}}
{{- define "antwort.image" -}}
{{- $repo := default (printf "%s/%s" .ctx.Values.image.registry .name) .image.repository }}
{{- $tag := default (default .ctx.Chart.AppVersion .ctx.Values.image.tag) .image.tag }}
{{- if hasPrefix "sha256:" $tag }}
{{- printf "%s@%s" $repo $tag }}
{{- else }}
{{- printf "%s:%s" $repo $tag }}
{{- end }}
{{- end }}

{{/* Seconds from an integer or a string like 90s, 10m, 2h. */}}
{{- define "antwort.seconds" -}}
{{- $v := toString . }}
{{- if regexMatch "^[0-9]+$" $v }}{{ $v }}
{{- else if regexMatch "^[0-9]+s$" $v }}{{ trimSuffix "s" $v }}
{{- else if regexMatch "^[0-9]+m$" $v }}{{ mul (trimSuffix "m" $v | atoi) 60 }}
{{- else if regexMatch "^[0-9]+h$" $v }}{{ mul (trimSuffix "h" $v | atoi) 3600 }}
{{- else }}{{ fail (printf "%q is not a duration (seconds, or a number followed by s, m or h)" $v) }}
{{- end }}
{{- end }}

{{/*
The pools with every default filled in, as YAML ({pools: [...]}); fails on duplicate names and
on minReady > maxPods, which the schema cannot express.
*/}}
{{- define "antwort.pools" -}}
{{- $out := list }}
{{- $seen := dict }}
{{- range $i, $p := .Values.pools }}
{{- $kind := default "python" $p.kind }}
{{- $name := default $kind $p.name }}
{{- if hasKey $seen $name }}
{{- fail (printf "pools[%d].name: %q is used by another pool; give each pool its own name" $i $name) }}
{{- end }}
{{- $_ := set $seen $name true }}
{{- $minReady := int (default 0 $p.minReady) }}
{{- $maxPods := int (default (max 4 (mul $minReady 4)) $p.maxPods) }}
{{- if gt $minReady $maxPods }}
{{- fail (printf "pools[%d] (%s): minReady %d exceeds maxPods %d; raise maxPods or lower minReady" $i $name $minReady $maxPods) }}
{{- end }}
{{- $defaultImage := get $.Values.sandbox.images $kind }}
{{- $image := default (include "antwort.image" (dict "ctx" $ "image" (dict "repository" $defaultImage) "name" (printf "antwort-sandbox-%s" $kind))) $p.image }}
{{- $res := default dict $p.resources }}
{{- $pool := dict "name" $name "kind" $kind "image" $image "minReady" $minReady "maxPods" $maxPods "egress" (default false $p.egress) "idleTimeoutSeconds" (include "antwort.seconds" (default "10m" $p.idleTimeout) | int) "maxLifetimeSeconds" (include "antwort.seconds" (default "1h" $p.maxLifetime) | int) "recyclePolicy" (default "destroy" $p.recyclePolicy) "resources" (dict "cpu" (toString (default "1" $res.cpu)) "memory" (toString (default "512Mi" $res.memory)) "workspaceSize" (toString (default "1Gi" $res.workspaceSize)) "tmpSize" (toString (default "64Mi" $res.tmpSize))) }}
{{- if $p.runtimeClassName }}
{{- $_ := set $pool "runtimeClassName" $p.runtimeClassName }}
{{- end }}
{{- with $p.memoryLimit }}
{{- if ne $kind "python" }}
{{- fail (printf "pools[%d] (%s): memoryLimit is for python pools (code_interpreter's memory_limit)" $i $name) }}
{{- end }}
{{- if hasKey $seen (printf "memoryLimit/%s" .) }}
{{- fail (printf "pools[%d] (%s): memoryLimit %s is served by another pool already" $i $name .) }}
{{- end }}
{{- $_ := set $seen (printf "memoryLimit/%s" .) true }}
{{- $_ := set $pool "memoryLimit" . }}
{{- end }}
{{- $out = append $out $pool }}
{{- end }}
{{- toYaml (dict "pools" $out) }}
{{- end }}

{{/* The pod security context: non-root, seccomp; fixed ids unless OpenShift assigns them. */}}
{{- define "antwort.podSecurityContext" -}}
runAsNonRoot: true
{{- if not .Values.openshift }}
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
{{- end }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "antwort.containerSecurityContext" -}}
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Identity volumes of a component: (dict "ctx" $ "secret" "<files-mode secret name>") */}}
{{- define "antwort.identityVolumes" -}}
{{- $mode := .ctx.Values.spiffe.mode }}
{{- if eq $mode "spire" }}
- name: spiffe-workload-api
  csi:
    driver: csi.spiffe.io
    readOnly: true
{{- else if eq $mode "csi" }}
- name: spiffe-svid
  csi:
    driver: spiffe.csi.cert-manager.io
    readOnly: true
    volumeAttributes:
      spiffe.csi.cert-manager.io/fs-group: "65532"
{{- else }}
- name: spiffe-svid
  secret:
    secretName: {{ .secret }}
    defaultMode: 288  # 0440
{{- end }}
{{- end }}

{{- define "antwort.identityMounts" -}}
{{- if eq .Values.spiffe.mode "spire" }}
- name: spiffe-workload-api
  mountPath: /spiffe-workload-api
  readOnly: true
{{- else }}
- name: spiffe-svid
  mountPath: /var/run/secrets/spiffe.io
  readOnly: true
{{- end }}
{{- end }}

{{/* The `identity:` config section as ANTWORT_IDENTITY__* variables (common/src/identity). */}}
{{- define "antwort.identityEnv" -}}
{{- if eq .Values.spiffe.mode "spire" }}
- name: SPIFFE_ENDPOINT_SOCKET
  value: unix:///spiffe-workload-api/{{ .Values.spiffe.spire.socketName }}
- name: ANTWORT_IDENTITY__SOURCE
  value: workload_api
- name: ANTWORT_IDENTITY__ENDPOINT
  value: unix:///spiffe-workload-api/{{ .Values.spiffe.spire.socketName }}
{{- else }}
- name: ANTWORT_IDENTITY__SOURCE
  value: files
- name: ANTWORT_IDENTITY__DIR
  value: /var/run/secrets/spiffe.io
{{- end }}
{{- end }}

{{/*
The pool manager's runtime.sandbox_identity (pool-manager/src/sandbox_identity.rs) for
spiffe.mode, as ANTWORT_RUNTIME__SANDBOX_IDENTITY__* variables.
*/}}
{{- define "antwort.sandboxIdentityEnv" -}}
- name: ANTWORT_RUNTIME__SANDBOX_IDENTITY__MODE
  value: {{ .Values.spiffe.mode }}
{{- if eq .Values.spiffe.mode "spire" }}
- name: ANTWORT_RUNTIME__SANDBOX_IDENTITY__SOCKET_NAME
  value: {{ .Values.spiffe.spire.socketName | quote }}
{{- else if eq .Values.spiffe.mode "files" }}
- name: ANTWORT_RUNTIME__SANDBOX_IDENTITY__SECRET_NAME
  value: {{ include "antwort.sandboxSecret" . }}
{{- end }}
{{- end }}

{{/* The pool the gateway's code_interpreter claims from (the first python pool) as YAML, or "". */}}
{{- define "antwort.codeInterpreterPool" -}}
{{- $python := list }}
{{- range (include "antwort.pools" . | fromYaml).pools }}
{{- if eq .kind "python" }}
{{- $python = append $python . }}
{{- end }}
{{- end }}
{{- if $python }}
{{- toYaml (first $python) }}
{{- end }}
{{- end }}

{{/* The Secret holding the gateway's API keys file, or nothing. */}}
{{- define "antwort.apiKeysSecret" -}}
{{- if .Values.auth.apiKeys.existingSecret }}
{{- .Values.auth.apiKeys.existingSecret }}
{{- else if and .Values.auth.apiKeys.generate (eq .Values.auth.mode "required") }}
{{- printf "%s-api-keys" (include "antwort.fullname" .) }}
{{- end }}
{{- end }}
