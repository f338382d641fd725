package secret

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

const raw = "ghu_Zq8xW3kP7vN2mR5tY9bL4cJ6hD1f"

func TestSecretNeverFormatsItsValue(t *testing.T) {
	s := New(raw)
	wrapped := struct {
		Token Secret
		Ptr   *Secret
	}{s, &s}
	outputs := map[string]string{}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%10s"} {
		outputs["direct "+verb] = fmt.Sprintf(verb, s)
		outputs["struct "+verb] = fmt.Sprintf(verb, wrapped)
	}
	outputs["String"] = s.String()
	outputs["GoString"] = s.GoString()
	js, err := json.Marshal(wrapped)
	if err != nil {
		t.Fatalf("json.Marshal() error = %v", err)
	}
	outputs["json"] = string(js)
	for _, h := range []func(*bytes.Buffer) slog.Handler{
		func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) },
		func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) },
	} {
		var buf bytes.Buffer
		slog.New(h(&buf)).Info("msg", "token", s, "ptr", &s, "struct", wrapped)
		outputs[fmt.Sprintf("slog %T", h(&buf))] = buf.String()
	}
	for name, out := range outputs {
		for i := 0; i+6 <= len(raw); i++ {
			if strings.Contains(out, raw[i:i+6]) {
				t.Errorf("%s output %q contains part of the secret", name, out)
				break
			}
		}
	}
}

func TestSecretAccessors(t *testing.T) {
	tests := []struct {
		name      string
		a, b      Secret
		wantEqual bool
	}{
		{"same", New(raw), New(raw), true},
		{"different", New(raw), New(raw + "x"), false},
		{"empty vs value", Secret{}, New(raw), false},
		{"both empty", Secret{}, New(""), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.a.Equal(tt.b); got != tt.wantEqual {
				t.Errorf("Equal() = %v; want %v", got, tt.wantEqual)
			}
		})
	}
	s := New(raw)
	if s.Reveal() != raw || s.IsZero() || !(Secret{}).IsZero() {
		t.Error("Reveal/IsZero do not round-trip")
	}
	if fp := s.Fingerprint(); len(fp) != 8 || strings.Contains(raw, fp) || fp != New(raw).Fingerprint() {
		t.Errorf("Fingerprint() = %q; want 8 stable hex digits", fp)
	}
	if (Secret{}).Fingerprint() != "" {
		t.Error("Fingerprint of empty secret is not empty")
	}
}
