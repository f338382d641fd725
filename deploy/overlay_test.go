package deploy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestOverlayReplacesPlaceholderSecrets follows the overlay recipe of
// docs/operations.md: a namespace, the image registry, and secretGenerator
// with behavior: replace and no name suffix, from files kept out of git. It
// proves the real values replace every placeholder under the names the
// Deployments mount, so the recipe keeps working as the base changes.
func TestOverlayReplacesPlaceholderSecrets(t *testing.T) {
	base, err := filepath.Abs(baseDir)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// Kustomize refuses an absolute path to a base; a relative one is the usual form.
	rel, err := filepath.Rel(dir, base)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"kustomization.yaml": `apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: copilot
resources:
  - ` + filepath.ToSlash(rel) + `
images:
  - name: copilot-broker/broker
    newName: registry.example/team/copilot-broker
    newTag: v1.2.3
  - name: copilot-broker/proxy
    newName: registry.example/team/copilot-proxy
    newTag: v1.2.3
secretGenerator:
  - name: copilot-broker
    behavior: replace
    files: [github-token, broker-keys]
    options: {disableNameSuffixHash: true}
  - name: copilot-proxy
    behavior: replace
    files: [broker-key, api-keys]
    options: {disableNameSuffixHash: true}
`,
		"github-token": "gho_test_token\n",
		"broker-keys":  "proxy:broker-secret\nalice:alice-secret\n",
		"broker-key":   "broker-secret\n",
		"api-keys":     "ci:ci-secret\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	o := decodeAll(t, render(t, dir))

	want := map[string]map[string]string{
		"copilot-broker": {"github-token": files["github-token"], "broker-keys": files["broker-keys"]},
		"copilot-proxy":  {"broker-key": files["broker-key"], "api-keys": files["api-keys"]},
	}
	for name, keys := range want {
		s, err := o.secret(name)
		if err != nil {
			t.Errorf("overlay: %v (a name suffix would break the Deployments' references)", err)
			continue
		}
		for k, v := range s.StringData {
			t.Errorf("Secret %s keeps placeholder stringData %s = %q", name, k, v)
		}
		for k, v := range keys {
			if got := string(s.Data[k]); got != v {
				t.Errorf("Secret %s key %s = %q; want %q", name, k, got, v)
			}
		}
		if len(s.Data) != len(keys) {
			t.Errorf("Secret %s has %d keys; want %d", name, len(s.Data), len(keys))
		}
	}
	for _, d := range o.deployments {
		if d.Namespace != "copilot" {
			t.Errorf("Deployment %s namespace = %q; want copilot", d.Name, d.Namespace)
		}
		for _, c := range d.Spec.Template.Spec.Containers {
			if !strings.HasPrefix(c.Image, "registry.example/team/") || !strings.HasSuffix(c.Image, ":v1.2.3") {
				t.Errorf("%s/%s image = %q; want the overlay's registry and tag", d.Name, c.Name, c.Image)
			}
		}
	}
}
