package apidoc

import (
	"encoding/json"
	"testing"
)

func TestOpenAPIDocumentsEveryRoute(t *testing.T) {
	var doc struct {
		Swagger string                    `json:"swagger"`
		Paths   map[string]map[string]any `json:"paths"`
	}
	if err := json.Unmarshal(OpenAPI, &doc); err != nil {
		t.Fatalf("json.Unmarshal(OpenAPI) error = %v", err)
	}
	for _, tt := range []struct{ path, method string }{
		{"/v1/token", "get"},
		{"/v1/token:watch", "get"},
		{"/v1/token:refresh", "post"},
	} {
		if _, ok := doc.Paths[tt.path][tt.method]; !ok {
			t.Errorf("OpenAPI has no %s %s; paths = %v", tt.method, tt.path, doc.Paths)
		}
	}
}
