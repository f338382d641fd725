package deploy

import (
	"errors"
	"fmt"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/resmap"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// baseDir is the kustomize base, relative to this package.
const baseDir = "kubernetes"

// objects is the rendered base, every object decoded into its k8s.io/api type.
type objects struct {
	deployments  []*appsv1.Deployment
	services     []*corev1.Service
	secrets      []*corev1.Secret
	hpas         []*autoscalingv2.HorizontalPodAutoscaler
	pdbs         []*policyv1.PodDisruptionBudget
	netpols      []*networkingv1.NetworkPolicy
	countByKind  map[string]int
	totalObjects int
}

// render builds the kustomization in dir on disk, as `kustomize build dir` would.
func render(t *testing.T, dir string) resmap.ResMap {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	return m
}

// newDecoder returns a strict decoder for the kinds the base may contain:
// unknown or duplicate fields, and kinds outside this scheme, are errors.
func newDecoder(t *testing.T) runtime.Decoder {
	t.Helper()
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		appsv1.AddToScheme, autoscalingv2.AddToScheme, corev1.AddToScheme,
		networkingv1.AddToScheme, policyv1.AddToScheme,
	} {
		if err := add(scheme); err != nil {
			t.Fatalf("building scheme: %v", err)
		}
	}
	return serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer()
}

// decodeStrict decodes one YAML document; any strict decoding error is returned.
func decodeStrict(dec runtime.Decoder, doc []byte) (runtime.Object, error) {
	obj, _, err := dec.Decode(doc, nil, nil)
	if err != nil {
		return nil, err
	}
	return obj, nil
}

// decodeAll decodes every rendered resource strictly and sorts it by type.
func decodeAll(t *testing.T, m resmap.ResMap) objects {
	t.Helper()
	dec := newDecoder(t)
	got := objects{countByKind: map[string]int{}}
	for _, r := range m.Resources() {
		doc, err := r.AsYAML()
		if err != nil {
			t.Fatalf("%s: as YAML: %v", r.CurId(), err)
		}
		obj, err := decodeStrict(dec, doc)
		if err != nil {
			t.Errorf("decoding %s strictly: %v", r.CurId(), err)
			continue
		}
		got.totalObjects++
		got.countByKind[r.GetKind()]++
		switch o := obj.(type) {
		case *appsv1.Deployment:
			got.deployments = append(got.deployments, o)
		case *corev1.Service:
			got.services = append(got.services, o)
		case *corev1.Secret:
			got.secrets = append(got.secrets, o)
		case *autoscalingv2.HorizontalPodAutoscaler:
			got.hpas = append(got.hpas, o)
		case *policyv1.PodDisruptionBudget:
			got.pdbs = append(got.pdbs, o)
		case *networkingv1.NetworkPolicy:
			got.netpols = append(got.netpols, o)
		default:
			t.Errorf("%s: decoded into unexpected type %T", r.CurId(), obj)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	return got
}

// renderBase renders and decodes the base; every test starts here.
func renderBase(t *testing.T) objects {
	t.Helper()
	return decodeAll(t, render(t, baseDir))
}

func (o objects) deployment(name string) (*appsv1.Deployment, error) {
	for _, d := range o.deployments {
		if d.Name == name {
			return d, nil
		}
	}
	return nil, fmt.Errorf("no Deployment %q", name)
}

func (o objects) secret(name string) (*corev1.Secret, error) {
	for _, s := range o.secrets {
		if s.Name == name {
			return s, nil
		}
	}
	return nil, errors.New("no Secret " + name)
}

// TestBaseRendersAndDecodesStrictly proves the base builds with kustomize and
// that every object it emits is a known kind whose fields all exist in the
// k8s.io/api types (a misspelt or misplaced field fails here).
func TestBaseRendersAndDecodesStrictly(t *testing.T) {
	got := renderBase(t)
	want := map[string]int{
		"Deployment": 2, "Service": 2, "Secret": 2, "HorizontalPodAutoscaler": 1,
		"PodDisruptionBudget": 2, "NetworkPolicy": 1,
	}
	for kind, n := range want {
		if got.countByKind[kind] != n {
			t.Errorf("rendered %d %s objects; want %d", got.countByKind[kind], kind, n)
		}
	}
	if len(got.countByKind) != len(want) {
		t.Errorf("rendered kinds %v; want exactly %v", got.countByKind, want)
	}
}

// TestStrictDecoderRejectsUnknownFields proves the decoder used above is
// strict: without this, a lenient decoder would let every manifest pass.
func TestStrictDecoderRejectsUnknownFields(t *testing.T) {
	dec := newDecoder(t)
	tests := []struct {
		name    string
		doc     string
		wantErr bool
	}{
		{"valid", "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 80}]}\n", false},
		{"unknown field", "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {portz: [{port: 80}]}\n", true},
		{"wrong case", "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {Ports: [{port: 80}]}\n", true},
		{"duplicate field", "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 80}], ports: []}\n", true},
		{"unknown kind", "apiVersion: v1\nkind: Servize\nmetadata: {name: a}\n", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decodeStrict(dec, []byte(tt.doc))
			if gotErr := err != nil; gotErr != tt.wantErr {
				t.Errorf("decodeStrict(%q) error = %v; want error %v", tt.doc, err, tt.wantErr)
			}
		})
	}
}
