{{/* The release's full name: the prefix of every object. */}}
{{- define "foresight.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels of every object, and of a component's (root, component) pods. */}}
{{- define "foresight.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "foresight.labels" -}}
{{ include "foresight.selector" . }}
app.kubernetes.io/part-of: foresight
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{- define "foresight.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* A setting's value as the processes see it (the settings are templates). */}}
{{- define "foresight.setting" -}}
{{- tpl (index .root.Values.settings .name | toString) .root -}}
{{- end -}}

{{- define "foresight.kafkaCluster" -}}
{{- .Values.kafka.clusterName | default (include "foresight.fullname" .) -}}
{{- end -}}

{{- define "foresight.kafkaBootstrap" -}}
{{- include "foresight.kafkaCluster" . }}-kafka-bootstrap:9092
{{- end -}}

{{- define "foresight.connectUrl" -}}
http://{{ include "foresight.fullname" . }}-connect-api:8083
{{- end -}}

{{- define "foresight.redisUrl" -}}
redis://{{ include "foresight.fullname" . }}-redis:6379/0
{{- end -}}

{{- define "foresight.apiKeysSecret" -}}
{{- if .Values.apiKeys.existingSecret -}}
{{- .Values.apiKeys.existingSecret -}}
{{- else if .Values.apiKeys.keysFile -}}
{{- include "foresight.fullname" . }}-api-keys
{{- else -}}
{{- fail "apiKeys: give the keys file (--set-file apiKeys.keysFile=keys.json, made by `foresight keys create NAME --roles ...`) or the name of a Secret holding it as keys.json (apiKeys.existingSecret)" -}}
{{- end -}}
{{- end -}}

{{- define "foresight.piiSecret" -}}
{{- if .Values.pii.existingSecret -}}
{{- .Values.pii.existingSecret -}}
{{- else if .Values.pii.keyFile -}}
{{- include "foresight.fullname" . }}-pii
{{- else -}}
{{- fail "pii: give the secret of the PII hash every ingest pod shares (`openssl rand -hex 32 > pii.key`, then --set-file pii.keyFile=pii.key) or the name of a Secret holding it as pii.key (pii.existingSecret)" -}}
{{- end -}}
{{- end -}}

{{- define "foresight.operateKeySecret" -}}
{{- if .Values.operateKey.existingSecret -}}
{{- .Values.operateKey.existingSecret -}}
{{- else if .Values.operateKey.key -}}
{{- include "foresight.fullname" . }}-operate-key
{{- else -}}
{{- fail "operateKey: give the key the retrain controller presents, one with the operate role (`foresight keys create retrain --roles operate`, then --set operateKey.key=...) or the name of a Secret holding it as `key` (operateKey.existingSecret)" -}}
{{- end -}}
{{- end -}}

{{- define "foresight.clickhouseSecret" -}}
{{- if .Values.clickhouse.existingSecret -}}
{{- .Values.clickhouse.existingSecret -}}
{{- else if and .Values.clickhouse.enabled .Values.clickhouse.password -}}
{{- include "foresight.fullname" . }}-clickhouse
{{- else if .Values.clickhouse.enabled -}}
{{- fail "clickhouse: give the password of the ClickHouse user (--set clickhouse.password=..., URL-safe characters) or the name of a Secret holding it as `password` (clickhouse.existingSecret)" -}}
{{- else -}}
{{- fail "clickhouse: with clickhouse.enabled=false, name the Secret whose key `url` is your server's CLICKHOUSE_URL (clickhouse.existingSecret)" -}}
{{- end -}}
{{- end -}}

{{/* Pod security every Foresight process runs with: the image's user (uid 1000), no root. */}}
{{- define "foresight.podSecurity" -}}
runAsNonRoot: true
runAsUser: 1000
runAsGroup: 1000
fsGroup: 1000
seccompProfile: {type: RuntimeDefault}
{{- end -}}

{{- define "foresight.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities: {drop: [ALL]}
{{- end -}}

{{/*
The environment of a Foresight process (root, reaches: the services it reaches, operateKey:
whether it presents the operate key): every setting from the ConfigMap; CLICKHOUSE_URL, a Redis
URL with a password and the operate key (FORESIGHT_API_KEY) from Secrets.
*/}}
{{- define "foresight.env" -}}
envFrom:
  - configMapRef:
      name: {{ include "foresight.fullname" .root }}-settings
{{- $env := list }}
{{- if has "clickhouse" .reaches }}
{{- $env = append $env (dict "name" "CLICKHOUSE_URL" "secret" (include "foresight.clickhouseSecret" .root) "key" "url") }}
{{- end }}
{{- if and (has "redis" .reaches) .root.Values.redis.urlSecret (not .root.Values.redis.enabled) }}
{{- $env = append $env (dict "name" "FEATURE_STORE_URL" "secret" .root.Values.redis.urlSecret "key" "url") }}
{{- end }}
{{- if .operateKey }}
{{- $env = append $env (dict "name" "FORESIGHT_API_KEY" "secret" (include "foresight.operateKeySecret" .root) "key" "key") }}
{{- end }}
{{- if $env }}
env:
{{- range $env }}
  - name: {{ .name }}
    valueFrom:
      secretKeyRef: {name: {{ .secret }}, key: {{ .key }}}
{{- end }}
{{- end }}
{{- end -}}

{{/* The files a process may read from Secrets: the setting of each one's path, its key in the
Secret, and the helper that names the Secret. */}}
{{- define "foresight.secretFiles" -}}
api-keys: {setting: FORESIGHT_KEYS_FILE, key: keys.json, secret: foresight.apiKeysSecret}
pii-key: {setting: FORESIGHT_PII_KEY_FILE, key: pii.key, secret: foresight.piiSecret}
{{- end -}}

{{/* The Secret-borne files of a process of values.processes (root, process). */}}
{{- define "foresight.secretsOf" -}}
{{- $secrets := list }}
{{- if .process.keys }}{{ $secrets = append $secrets "api-keys" }}{{ end }}
{{- if .process.piiKey }}{{ $secrets = append $secrets "pii-key" }}{{ end }}
{{- join "," $secrets -}}
{{- end -}}

{{/*
Volumes and mounts every Foresight process has: a writable /tmp and the folder of the settings'
paths (stack folder, credentials, registry); and, read only, the Secrets it reads (root,
secrets: names of foresight.secretFiles).
*/}}
{{- define "foresight.volumes" -}}
- name: tmp
  emptyDir: {}
- name: foresight
  emptyDir: {}
{{- $files := include "foresight.secretFiles" . | fromYaml }}
{{- range .secrets }}
{{- $f := index $files . }}
- name: {{ . }}
  secret:
    secretName: {{ include $f.secret $.root }}
    items: [{key: {{ $f.key }}, path: {{ base (include "foresight.setting" (dict "root" $.root "name" $f.setting)) }}}]
{{- end }}
{{- end -}}

{{- define "foresight.volumeMounts" -}}
- {name: tmp, mountPath: /tmp}
- {name: foresight, mountPath: /var/lib/foresight}
{{- $files := include "foresight.secretFiles" . | fromYaml }}
{{- range .secrets }}
- name: {{ . }}
  mountPath: {{ dir (include "foresight.setting" (dict "root" $.root "name" (index $files .).setting)) }}
  readOnly: true
{{- end }}
{{- end -}}

{{/* HTTP probes on /health at the process's port. */}}
{{- define "foresight.probe" -}}
httpGet: {path: /health, port: http}
periodSeconds: {{ .periodSeconds }}
failureThreshold: {{ .failureThreshold }}
timeoutSeconds: 5
{{- end -}}

{{/* NetworkPolicy peers: this release's pods of the given components. */}}
{{- define "foresight.peers" -}}
- podSelector:
    matchExpressions:
      - {key: app.kubernetes.io/instance, operator: In, values: [{{ .root.Release.Name }}]}
      - {key: app.kubernetes.io/component, operator: In, values: [{{ join ", " .components }}]}
{{- end -}}

{{/* The components of this release that reach a service (kafka, redis, clickhouse). */}}
{{- define "foresight.clientsOf" -}}
{{- $clients := list }}
{{- if has .service .root.Values.workers.reaches }}{{ $clients = append $clients "worker" }}{{ end }}
{{- range $name, $process := .root.Values.processes }}
{{- if has $.service $process.reaches }}{{ $clients = append $clients $name }}{{ end }}
{{- end }}
{{- join "," $clients -}}
{{- end -}}
