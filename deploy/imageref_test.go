package deploy

import (
	"fmt"
	"strings"
	"testing"
)

// checkImageRef rejects image references that float: no tag and no digest
// (which means :latest) or the :latest tag itself.
func checkImageRef(ref string) error {
	if strings.Contains(ref, "@sha256:") {
		return nil
	}
	name := ref[strings.LastIndex(ref, "/")+1:]
	_, tag, ok := strings.Cut(name, ":")
	switch {
	case !ok || tag == "":
		return fmt.Errorf("image %q has no tag or digest (so it means :latest)", ref)
	case tag == "latest":
		return fmt.Errorf("image %q uses the mutable :latest tag", ref)
	}
	return nil
}

func TestCheckImageRef(t *testing.T) {
	tests := []struct {
		ref     string
		wantErr bool
	}{
		{"copilot-broker/broker:v0.1.0", false},
		{"registry.example:5000/team/broker:v1", false},
		{"registry.example:5000/team/broker", true},
		{"broker", true},
		{"broker:latest", true},
		{"gcr.io/distroless/static-debian12:nonroot", false},
		{"broker@sha256:0123", false},
	}
	for _, tt := range tests {
		t.Run(tt.ref, func(t *testing.T) {
			if err := checkImageRef(tt.ref); (err != nil) != tt.wantErr {
				t.Errorf("checkImageRef(%q) = %v; want error %v", tt.ref, err, tt.wantErr)
			}
		})
	}
}

// show prints a pointer field as its value, or "unset".
func show[T any](p *T) string {
	if p == nil {
		return "unset"
	}
	return fmt.Sprint(*p)
}
