package deploy

import (
	"net"
	"path"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// selecting returns the Deployments whose pod template the selector matches.
func selecting(t *testing.T, o objects, sel *metav1.LabelSelector) []*appsv1.Deployment {
	t.Helper()
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		t.Fatalf("selector %v: %v", sel, err)
	}
	if s.Empty() {
		t.Fatalf("selector %v selects every pod", sel)
	}
	var out []*appsv1.Deployment
	for _, d := range o.deployments {
		if s.Matches(labels.Set(d.Spec.Template.Labels)) {
			out = append(out, d)
		}
	}
	return out
}

// selectsOne checks that sel matches exactly one Deployment's pods and returns it.
func selectsOne(t *testing.T, what string, o objects, sel *metav1.LabelSelector) *appsv1.Deployment {
	t.Helper()
	ds := selecting(t, o, sel)
	if len(ds) != 1 {
		t.Fatalf("%s: selector %v matches %d Deployments; want 1", what, sel.MatchLabels, len(ds))
	}
	return ds[0]
}

// hasPort reports whether a container of the pod declares port p (by name or number).
func hasPort(spec corev1.PodSpec, p intstr.IntOrString) bool {
	for _, c := range spec.Containers {
		for _, cp := range c.Ports {
			if (p.Type == intstr.String && cp.Name == p.StrVal) ||
				(p.Type == intstr.Int && cp.ContainerPort == p.IntVal) {
				return true
			}
		}
	}
	return false
}

func TestDeploymentSelectorsMatchTheirPods(t *testing.T) {
	o := renderBase(t)
	for _, d := range o.deployments {
		t.Run(d.Name, func(t *testing.T) {
			if got := selectsOne(t, "Deployment "+d.Name, o, d.Spec.Selector); got != d {
				t.Errorf("Deployment %s selector matches the pods of %s", d.Name, got.Name)
			}
		})
	}
}

func TestServicesSelectPodsWithTheirTargetPorts(t *testing.T) {
	o := renderBase(t)
	for _, s := range o.services {
		t.Run(s.Name, func(t *testing.T) {
			d := selectsOne(t, "Service "+s.Name, o, &metav1.LabelSelector{MatchLabels: s.Spec.Selector})
			for _, p := range s.Spec.Ports {
				if !hasPort(d.Spec.Template.Spec, p.TargetPort) {
					t.Errorf("Service %s port %s targets %v; Deployment %s declares no such port", s.Name, p.Name, p.TargetPort.String(), d.Name)
				}
			}
		})
	}
}

func TestProbePortsExist(t *testing.T) {
	o := renderBase(t)
	for _, d := range o.deployments {
		spec := d.Spec.Template.Spec
		for _, c := range spec.Containers {
			probes := map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe, "startup": c.StartupProbe}
			for kind, p := range probes {
				if p == nil {
					continue
				}
				var port intstr.IntOrString
				switch {
				case p.HTTPGet != nil:
					port = p.HTTPGet.Port
				case p.TCPSocket != nil:
					port = p.TCPSocket.Port
				case p.GRPC != nil:
					port = intstr.FromInt32(p.GRPC.Port)
				default:
					t.Errorf("%s/%s %s probe has no network handler", d.Name, c.Name, kind)
					continue
				}
				if !hasPort(spec, port) {
					t.Errorf("%s/%s %s probe uses port %s; no container declares it", d.Name, c.Name, kind, port.String())
				}
			}
		}
	}
}

func TestPrometheusScrapePortsExist(t *testing.T) {
	o := renderBase(t)
	for _, d := range o.deployments {
		a := d.Spec.Template.Annotations
		if a["prometheus.io/scrape"] != "true" || a["prometheus.io/path"] != "/metrics" {
			t.Errorf("Deployment %s pod annotations %v; want prometheus.io/scrape \"true\" and path /metrics", d.Name, a)
		}
		n, err := strconv.Atoi(a["prometheus.io/port"])
		if err != nil || !hasPort(d.Spec.Template.Spec, intstr.FromInt(n)) {
			t.Errorf("Deployment %s prometheus.io/port = %q; want a declared container port", d.Name, a["prometheus.io/port"])
		}
	}
}

func TestAutoscalerAndDisruptionBudgetsTargetDeployments(t *testing.T) {
	o := renderBase(t)
	for _, h := range o.hpas {
		ref := h.Spec.ScaleTargetRef
		d, err := o.deployment(ref.Name)
		if ref.Kind != "Deployment" || ref.APIVersion != "apps/v1" || err != nil {
			t.Fatalf("HPA %s targets %s %s %s; want an apps/v1 Deployment of the base (%v)", h.Name, ref.APIVersion, ref.Kind, ref.Name, err)
		}
		if d.Spec.Replicas != nil {
			t.Errorf("Deployment %s sets replicas %d; the HPA %s owns the count", d.Name, *d.Spec.Replicas, h.Name)
		}
		if h.Spec.MinReplicas == nil || *h.Spec.MinReplicas < 2 {
			t.Errorf("HPA %s minReplicas = %s; want at least 2", h.Name, show(h.Spec.MinReplicas))
		}
		for _, c := range d.Spec.Template.Spec.Containers {
			if c.Resources.Requests.Cpu().IsZero() {
				t.Errorf("%s/%s has no CPU request; the HPA's utilization target needs one", d.Name, c.Name)
			}
		}
	}
	if len(o.hpas) == 0 {
		t.Error("no HorizontalPodAutoscaler rendered")
	}
	for _, p := range o.pdbs {
		selectsOne(t, "PodDisruptionBudget "+p.Name, o, p.Spec.Selector)
	}
}

// TestNetworkPolicyAdmitsProxiesToTheBroker proves the policy selects the
// broker, lets the proxy pods reach the port the proxy dials, and names only
// ports the broker declares.
func TestNetworkPolicyAdmitsProxiesToTheBroker(t *testing.T) {
	o := renderBase(t)
	proxy, err := o.deployment("copilot-proxy")
	if err != nil {
		t.Fatal(err)
	}
	brokerPort := dialedBrokerPort(t, o, proxy)
	if len(o.netpols) != 1 {
		t.Fatalf("rendered %d NetworkPolicies; want 1", len(o.netpols))
	}
	np := o.netpols[0]
	target := selectsOne(t, "NetworkPolicy "+np.Name, o, &np.Spec.PodSelector)
	if target.Name != "copilot-broker" {
		t.Fatalf("NetworkPolicy %s selects %s; want copilot-broker", np.Name, target.Name)
	}
	proxyAdmitted := false
	for i, rule := range np.Spec.Ingress {
		if len(rule.From) == 0 || len(rule.Ports) == 0 {
			t.Errorf("ingress rule %d admits every source or every port", i)
		}
		for _, p := range rule.Ports {
			if p.Port == nil || !hasPort(target.Spec.Template.Spec, *p.Port) {
				t.Errorf("ingress rule %d names port %v; the broker declares no such port", i, p.Port)
			}
		}
		for _, peer := range rule.From {
			if peer.IPBlock != nil || peer.PodSelector == nil || len(peer.PodSelector.MatchLabels) == 0 {
				t.Errorf("ingress rule %d peer %+v; want pods selected by label", i, peer)
				continue
			}
			if peer.NamespaceSelector != nil {
				continue // Prometheus, outside the base.
			}
			for _, d := range selecting(t, o, peer.PodSelector) {
				if d.Name != "copilot-proxy" {
					t.Errorf("ingress rule %d admits Deployment %s; only proxies should be", i, d.Name)
				}
				for _, p := range rule.Ports {
					if p.Port.String() == brokerPort.Name || p.Port.IntValue() == int(brokerPort.ContainerPort) {
						proxyAdmitted = true
					}
				}
			}
		}
	}
	if !proxyAdmitted {
		t.Errorf("NetworkPolicy %s does not let copilot-proxy pods reach the broker's %s port", np.Name, brokerPort.Name)
	}
}

// dialedBrokerPort resolves PROXY_BROKER_ADDR through the broker Service to
// the broker container port the proxy reaches.
func dialedBrokerPort(t *testing.T, o objects, proxy *appsv1.Deployment) corev1.ContainerPort {
	t.Helper()
	addr := env(proxy.Spec.Template.Spec.Containers[0], "PROXY_BROKER_ADDR")
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("PROXY_BROKER_ADDR = %q: %v", addr, err)
	}
	for _, s := range o.services {
		if s.Name != host {
			continue
		}
		for _, sp := range s.Spec.Ports {
			if strconv.Itoa(int(sp.Port)) != port {
				continue
			}
			d := selectsOne(t, "Service "+s.Name, o, &metav1.LabelSelector{MatchLabels: s.Spec.Selector})
			for _, cp := range d.Spec.Template.Spec.Containers[0].Ports {
				if cp.Name == sp.TargetPort.StrVal || cp.ContainerPort == sp.TargetPort.IntVal {
					return cp
				}
			}
		}
	}
	t.Fatalf("PROXY_BROKER_ADDR = %q names no port of a Service in the base", addr)
	return corev1.ContainerPort{}
}

// env returns the value of the container's environment variable name, or "".
func env(c corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

// TestListenAddressesMatchContainerPorts proves each server listens beyond
// loopback (else the pod is unreachable) on the port the manifests name.
func TestListenAddressesMatchContainerPorts(t *testing.T) {
	o := renderBase(t)
	tests := []struct{ deployment, env, port string }{
		{"copilot-broker", "BROKER_GRPC_ADDR", "grpc"},
		{"copilot-broker", "BROKER_HTTP_ADDR", "http"},
		{"copilot-broker", "BROKER_ADMIN_ADDR", "admin"},
		{"copilot-proxy", "PROXY_ADDR", "http"},
		{"copilot-proxy", "PROXY_ADMIN_ADDR", "admin"},
	}
	for _, tt := range tests {
		t.Run(tt.env, func(t *testing.T) {
			d, err := o.deployment(tt.deployment)
			if err != nil {
				t.Fatal(err)
			}
			c := d.Spec.Template.Spec.Containers[0]
			host, port, err := net.SplitHostPort(env(c, tt.env))
			if err != nil {
				t.Fatalf("%s = %q: %v", tt.env, env(c, tt.env), err)
			}
			if ip := net.ParseIP(host); ip == nil || !ip.IsUnspecified() {
				t.Errorf("%s host = %q; want 0.0.0.0 or ::", tt.env, host)
			}
			n, _ := strconv.Atoi(port)
			found := false
			for _, cp := range c.Ports {
				found = found || (cp.Name == tt.port && int(cp.ContainerPort) == n)
			}
			if !found {
				t.Errorf("%s port %s; want the containerPort named %s", tt.env, port, tt.port)
			}
		})
	}
}

// TestMountedSecretFilesExist proves every *_FILE path a container is given
// lies in a Secret volume mounted as a directory, and names a key that Secret
// has; and that every Secret volume refers to a Secret of the base.
func TestMountedSecretFilesExist(t *testing.T) {
	o := renderBase(t)
	for _, d := range o.deployments {
		spec := d.Spec.Template.Spec
		secretKeys := map[string]map[string]bool{} // volume name -> file names
		for _, v := range spec.Volumes {
			if v.Secret == nil {
				continue
			}
			s, err := o.secret(v.Secret.SecretName)
			if err != nil {
				t.Errorf("Deployment %s volume %s: %v", d.Name, v.Name, err)
				continue
			}
			keys := map[string]bool{}
			for k := range s.StringData {
				keys[k] = true
			}
			for k := range s.Data {
				keys[k] = true
			}
			files := map[string]bool{}
			if len(v.Secret.Items) == 0 {
				files = keys
			}
			for _, it := range v.Secret.Items {
				if !keys[it.Key] {
					t.Errorf("Deployment %s volume %s projects key %q; Secret %s lacks it", d.Name, v.Name, it.Key, s.Name)
				}
				files[it.Path] = true
			}
			secretKeys[v.Name] = files
		}
		for _, c := range spec.Containers {
			for _, e := range c.Env {
				if !strings.HasSuffix(e.Name, "_FILE") {
					continue
				}
				if !secretFileExists(c, secretKeys, e.Value) {
					t.Errorf("%s/%s %s = %q; no key of a mounted Secret is there", d.Name, c.Name, e.Name, e.Value)
				}
			}
			for _, m := range c.VolumeMounts {
				if _, ok := secretKeys[m.Name]; ok && m.SubPath != "" {
					t.Errorf("%s/%s mounts Secret volume %s with subPath; the kubelet never updates it", d.Name, c.Name, m.Name)
				}
			}
		}
	}
}

func secretFileExists(c corev1.Container, secretKeys map[string]map[string]bool, file string) bool {
	for _, m := range c.VolumeMounts {
		files, ok := secretKeys[m.Name]
		if !ok || path.Dir(file) != path.Clean(m.MountPath) {
			continue
		}
		if files[path.Base(file)] {
			return true
		}
	}
	return false
}

func TestNoMutableImageTags(t *testing.T) {
	o := renderBase(t)
	for _, d := range o.deployments {
		for _, c := range append(d.Spec.Template.Spec.InitContainers, d.Spec.Template.Spec.Containers...) {
			if err := checkImageRef(c.Image); err != nil {
				t.Errorf("%s/%s: %v", d.Name, c.Name, err)
			}
		}
	}
}
