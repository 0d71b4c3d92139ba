{{/* The chart's name, overridable. */}}
{{- define "swarm-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The name of every object of this release: the release name alone when it already contains
the chart's name (`helm install swarm-operator …`), else "<release>-<chart>". 63 characters
at most: it is used as a label value and in DNS names.
*/}}
{{- define "swarm-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "swarm-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: fixed for the life of a release (a Deployment's selector is immutable). */}}
{{- define "swarm-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "swarm-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "swarm-operator.labels" -}}
helm.sh/chart: {{ include "swarm-operator.chart" . }}
{{ include "swarm-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: swarm-operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "swarm-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "swarm-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Several replicas need leader election so that exactly one acts; one replica may ask for it too. */}}
{{- define "swarm-operator.leaderElect" -}}
{{- if or .Values.leaderElection.enabled (gt (int .Values.replicaCount) 1) }}true{{ end }}
{{- end }}

{{- define "swarm-operator.leaseName" -}}
{{- default (include "swarm-operator.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{- define "swarm-operator.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/*
What the operator does in a namespace it serves. kube.py is the only caller of the API:
pods list/watch (kopf and the cache), create/delete (reconcile), patch (the autoscaler marks
drained pods with an annotation), get; services list/watch/create, patch (annotations and type
in place) and delete (only to re-create it between headless and not; otherwise deletion is the
garbage collector's, through owner references); SwarmClusters read-only plus a merge
patch of their status subresource; Events create. No Secrets: the GCS fault tolerance password
reaches the Ray pods through a secretKeyRef that the kubelet resolves, never through the operator.
*/}}
{{- define "swarm-operator.namespacedRules" -}}
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch, create, delete, patch]
- apiGroups: [""]
  resources: [services]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]  # patch: a repeated event updates its count (kube.post_event)
- apiGroups: [swarm.io]
  resources: [swarmclusters]
  # patch: metadata.finalizers (GCS fault tolerance), a finished job's cluster scaled to zero; create and
  # delete: a SwarmJob's own cluster
  verbs: [get, list, watch, patch, create, delete]
- apiGroups: [swarm.io]
  resources: [swarmjobs]
  verbs: [get, list, watch, patch, delete]  # patch: the finalizer of a clusterSelector job; delete: its TTL
- apiGroups: [swarm.io]
  resources: [swarmclusters/status, swarmjobs/status]
  verbs: [patch]
- apiGroups: [kueue.x-k8s.io]
  resources: [workloads]
  verbs: [get, create, delete]  # a queued SwarmJob's or SwarmCluster's Workload (docs/kueue.md); nothing of it without Kueue
- apiGroups: [kueue.x-k8s.io]
  resources: [workloads/status]
  verbs: [patch]  # PodsReady, Finished, and the quota released after an eviction
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, create]  # a token-auth cluster's Ray token (by name; never list or watch)
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, create]  # the Redis key cleanup of a deleted GCS fault-tolerant cluster
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, list, watch, create, delete]  # the head's PodDisruptionBudget (head.podDisruptionBudget)
{{- end }}

{{/*
kopf's own observation, cluster-scoped and read-only. CRDs: kopf watches them so that a
SwarmCluster CRD created after the operator started (kubectl apply -f install.yaml applies
both at once) is served without a restart; without this it scans once and never again.
Namespaces (only when namespaced): kopf lists and watches them to know which of the named
namespaces exist; without it, kopf's list is refused and retried (measured: ~54 s, 9 tries) before it
falls back to assuming they all do, so the operator starts serving that much later.
Nodes: whether a pod's node was deleted or stays NotReady, which makes its end a disruption, not a failure.
ResourceFlavors (Kueue's, cluster-scoped): the node labels and tolerations an admitted SwarmJob's pods get.
*/}}
{{- define "swarm-operator.observerRules" -}}
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [list, watch]
- apiGroups: [""]
  resources: [nodes]
  verbs: [get, list, watch]
- apiGroups: [kueue.x-k8s.io]
  resources: [resourceflavors, workloadpriorityclasses]
  verbs: [get]  # an admitted workload's flavors; a queued one's priority class
- apiGroups: [scheduling.k8s.io]
  resources: [priorityclasses]
  verbs: [get]  # a queued workload's priority from its pods' priorityClassName
{{- if .Values.watchNamespaces }}
- apiGroups: [""]
  resources: [namespaces]
  verbs: [list, watch]
{{- end }}
{{- end }}
