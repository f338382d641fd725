package deploy

import (
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// TestPodsAreLockedDown checks the security context every pod and container
// of the base must have: non-root, read-only root filesystem, no privilege
// escalation, all capabilities dropped, the runtime's seccomp profile, no
// service account token, Secret files not world-readable.
func TestPodsAreLockedDown(t *testing.T) {
	o := renderBase(t)
	for _, d := range o.deployments {
		t.Run(d.Name, func(t *testing.T) {
			spec := d.Spec.Template.Spec
			psc := spec.SecurityContext
			if psc == nil {
				t.Fatal("pod has no securityContext")
			}
			if psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
				t.Errorf("pod runAsNonRoot = %v; want true", show(psc.RunAsNonRoot))
			}
			if psc.RunAsUser == nil || *psc.RunAsUser == 0 {
				t.Errorf("pod runAsUser = %v; want a non-zero uid (the image's nonroot 65532)", show(psc.RunAsUser))
			}
			if psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
				t.Errorf("pod seccompProfile = %v; want RuntimeDefault", psc.SeccompProfile)
			}
			if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
				t.Errorf("automountServiceAccountToken = %v; want false", show(spec.AutomountServiceAccountToken))
			}
			if spec.HostNetwork || spec.HostPID || spec.HostIPC {
				t.Error("pod shares a host namespace")
			}
			for _, v := range spec.Volumes {
				if v.Secret != nil && (v.Secret.DefaultMode == nil || *v.Secret.DefaultMode&0o007 != 0) {
					t.Errorf("Secret volume %s defaultMode = %s; want no access for others (0440)", v.Name, modeString(v.Secret.DefaultMode))
				}
				if v.HostPath != nil {
					t.Errorf("volume %s is a hostPath", v.Name)
				}
			}
			for _, c := range append(spec.InitContainers, spec.Containers...) {
				checkContainer(t, c)
			}
		})
	}
}

func checkContainer(t *testing.T, c corev1.Container) {
	t.Helper()
	sc := c.SecurityContext
	if sc == nil {
		t.Errorf("container %s has no securityContext", c.Name)
		return
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("container %s allowPrivilegeEscalation = %v; want false", c.Name, show(sc.AllowPrivilegeEscalation))
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("container %s readOnlyRootFilesystem = %v; want true", c.Name, show(sc.ReadOnlyRootFilesystem))
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Errorf("container %s is privileged", c.Name)
	}
	if sc.RunAsUser != nil && *sc.RunAsUser == 0 {
		t.Errorf("container %s runs as root", c.Name)
	}
	if sc.RunAsNonRoot != nil && !*sc.RunAsNonRoot {
		t.Errorf("container %s overrides runAsNonRoot to false", c.Name)
	}
	caps := sc.Capabilities
	if caps == nil || len(caps.Drop) != 1 || caps.Drop[0] != "ALL" || len(caps.Add) != 0 {
		t.Errorf("container %s capabilities = %+v; want drop [ALL] and add none", c.Name, caps)
	}
	r := c.Resources
	if r.Requests.Cpu().IsZero() || r.Requests.Memory().IsZero() || r.Limits.Memory().IsZero() {
		t.Errorf("container %s resources = %+v; want CPU and memory requests and a memory limit", c.Name, r)
	}
	if c.LivenessProbe == nil || c.ReadinessProbe == nil {
		t.Errorf("container %s lacks a liveness or readiness probe", c.Name)
	}
}

// TestBrokerShape checks what the issue asks of the broker specifically: two
// replicas, liveness on grpc.health.v1, readiness on /readyz.
func TestBrokerShape(t *testing.T) {
	o := renderBase(t)
	d, err := o.deployment("copilot-broker")
	if err != nil {
		t.Fatal(err)
	}
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 2 {
		t.Errorf("broker replicas = %v; want 2", show(d.Spec.Replicas))
	}
	c := d.Spec.Template.Spec.Containers[0]
	if c.LivenessProbe == nil || c.LivenessProbe.GRPC == nil {
		t.Errorf("broker liveness probe = %+v; want a grpc probe", c.LivenessProbe)
	}
	if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Errorf("broker readiness probe = %+v; want GET /readyz", c.ReadinessProbe)
	}
	if env(c, "GITHUB_TOKEN") != "" {
		t.Error("broker takes GITHUB_TOKEN from the environment; use the re-read token file")
	}
	if p, err := o.deployment("copilot-proxy"); err != nil {
		t.Error(err)
	} else {
		for _, v := range p.Spec.Template.Spec.Volumes {
			if v.Secret != nil && v.Secret.SecretName == "copilot-broker" {
				t.Error("the proxy mounts the broker's Secret, which holds the GitHub token")
			}
		}
	}
}

// modeString prints a file mode field in octal, or "unset".
func modeString(m *int32) string {
	if m == nil {
		return "unset"
	}
	return fmt.Sprintf("%#o", *m)
}
