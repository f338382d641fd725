package wsresponses

import (
	"encoding/json"
	"testing"
)

func TestCreateBody(t *testing.T) {
	for _, tc := range []struct{ msg, code string }{
		{`{"type":"response.create","model":"m","stream":false,"initiator":"user"}`, ""},
		{`[]`, "invalid_json"},
		{`{"type":1}`, "missing_type"},
		{`{"type":"response.cancel"}`, "unknown_message_type"},
	} {
		body, err := createBody([]byte(tc.msg))
		if tc.code != "" {
			if err == nil || err.code != tc.code {
				t.Errorf("%s: %v; want %s", tc.msg, err, tc.code)
			}
			continue
		}
		if err != nil || string(body) != `{"model":"m","stream":true}` {
			t.Errorf("%s: %s %v", tc.msg, body, err)
		}
	}
	msg, err := createMessage([]byte(`{"model":"m","stream":true,"input":"x"}`), "agent")
	if err != nil || string(msg) != `{"initiator":"agent","input":"x","model":"m","type":"response.create"}` {
		t.Errorf("createMessage: %s %v", msg, err)
	}
}

// FuzzCreateBody: a client message is refused or becomes a JSON object
// with stream true and neither type nor initiator.
func FuzzCreateBody(f *testing.F) {
	f.Add([]byte(`{"type":"response.create","model":"m","input":"x"}`))
	f.Add([]byte(`{"type":"response.create","stream":"no","initiator":{}}`))
	f.Add([]byte(`not json`))
	f.Fuzz(func(t *testing.T, msg []byte) {
		body, merr := createBody(msg)
		if merr != nil {
			return
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(body, &m); err != nil {
			t.Fatalf("body %s: %v", body, err)
		}
		if string(m["stream"]) != "true" || m["type"] != nil || m["initiator"] != nil {
			t.Fatalf("body %s", body)
		}
	})
}
