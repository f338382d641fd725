package tokens

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/copilot-broker/copilot-broker/internal/secret"
)

func TestParseTokenResponse(t *testing.T) {
	date := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name    string
		body    string
		want    *CopilotToken
		wantErr bool
	}{
		{name: "typical", body: `{"token":"tid=1:s","expires_at":1748781000,"refresh_in":1500,"sku":"free_limited_copilot","endpoints":{"api":" https://api.githubcopilot.com "}}`,
			want: &CopilotToken{Token: secret.New("tid=1:s"), ExpiresAt: time.Unix(1748781000, 0).UTC(), RefreshIn: 1500 * time.Second, SKU: "free_limited_copilot", APIBaseURL: "https://api.githubcopilot.com", ServerDate: date}},
		{name: "numbers as strings and floats", body: `{"token":"t","expires_at":"1748781000","refresh_in":1500.5}`,
			want: &CopilotToken{Token: secret.New("t"), ExpiresAt: time.Unix(1748781000, 0).UTC(), RefreshIn: 1500500 * time.Millisecond, ServerDate: date,
				APIBaseURL: "https://api.githubcopilot.com", APIBaseURLDefaulted: true}},
		{name: "refresh_in 0", body: `{"token":"t","expires_at":1748781000,"refresh_in":0}`,
			want: &CopilotToken{Token: secret.New("t"), ExpiresAt: time.Unix(1748781000, 0).UTC(), ServerDate: date,
				APIBaseURL: "https://api.githubcopilot.com", APIBaseURLDefaulted: true}},
		{name: "odd informational fields ignored", body: `{"token":"t","expires_at":1748781000,"refresh_in":1,"sku":null,"endpoints":{"api":5},"chat_enabled":"yes","x":[{}]}`,
			want: &CopilotToken{Token: secret.New("t"), ExpiresAt: time.Unix(1748781000, 0).UTC(), RefreshIn: time.Second, ServerDate: date,
				APIBaseURL: "https://api.githubcopilot.com", APIBaseURLDefaulted: true}},
		{name: "empty token", body: `{"token":"","expires_at":1748781000,"refresh_in":1500}`, wantErr: true},
		{name: "token not a string", body: `{"token":42,"expires_at":1748781000,"refresh_in":1500}`, wantErr: true},
		{name: "token with newline", body: `{"token":"a\nb","expires_at":1748781000,"refresh_in":1500}`, wantErr: true},
		{name: "token with space", body: `{"token":"a b","expires_at":1748781000,"refresh_in":1500}`, wantErr: true},
		{name: "no refresh_in", body: `{"token":"t","expires_at":1748781000}`, wantErr: true},
		{name: "null refresh_in", body: `{"token":"t","expires_at":1748781000,"refresh_in":null}`, wantErr: true},
		{name: "negative refresh_in", body: `{"token":"t","expires_at":1748781000,"refresh_in":-1}`, wantErr: true},
		{name: "huge refresh_in", body: `{"token":"t","expires_at":1748781000,"refresh_in":1e300}`, wantErr: true},
		{name: "no expires_at", body: `{"token":"t","refresh_in":1500}`, wantErr: true},
		{name: "expires_at 0", body: `{"token":"t","expires_at":0,"refresh_in":1500}`, wantErr: true},
		{name: "expires_at garbage", body: `{"token":"t","expires_at":"tomorrow","refresh_in":1500}`, wantErr: true},
		{name: "not an object", body: `[1,2]`, wantErr: true},
		{name: "empty", body: ``, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseTokenResponse([]byte(tt.body), date)
			if tt.wantErr {
				if !errors.Is(err, ErrMalformedResponse) {
					t.Fatalf("parseTokenResponse(%s) error = %v; want ErrMalformedResponse", tt.body, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseTokenResponse(%s) error = %v", tt.body, err)
			}
			if diff := cmp.Diff(tt.want, got, secretComparer); diff != "" {
				t.Errorf("parseTokenResponse(%s) mismatch (-want +got):\n%s", tt.body, diff)
			}
		})
	}
}

// FuzzParseTokenResponse checks that no input panics the parser, that every
// rejection is ErrMalformedResponse without quoting the input, and that every
// accepted answer is usable and survives a round trip.
func FuzzParseTokenResponse(f *testing.F) {
	f.Add([]byte(`{"token":"tid=1;exp=2:sig","expires_at":1748781000,"refresh_in":1500}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		tok, err := parseTokenResponse(body, time.Time{})
		if err != nil {
			if !errors.Is(err, ErrMalformedResponse) {
				t.Fatalf("error %v is not ErrMalformedResponse", err)
			}
			if len(body) >= 12 && strings.Contains(err.Error(), string(body)) {
				t.Fatalf("error %q quotes the input", err)
			}
			return
		}
		v := tok.Token.Reveal()
		if v == "" || !validHeaderToken(v) {
			t.Fatalf("accepted token %q is not usable in a header", v)
		}
		if tok.RefreshIn < 0 || tok.RefreshIn > maxRefreshIn {
			t.Fatalf("accepted refresh_in %v out of range", tok.RefreshIn)
		}
		if s := tok.ExpiresAt.Unix(); s < minUnixSeconds || s > maxUnixSeconds {
			t.Fatalf("accepted expires_at %v out of range", tok.ExpiresAt)
		}
		again, err := json.Marshal(map[string]any{
			"token": v, "expires_at": tok.ExpiresAt.Unix(), "refresh_in": tok.RefreshIn.Seconds(),
			"sku": tok.SKU, "endpoints": map[string]string{"api": tok.APIBaseURL},
		})
		if err != nil {
			t.Fatal(err)
		}
		tok2, err := parseTokenResponse(again, time.Time{})
		if err != nil {
			t.Fatalf("re-encoded answer %s rejected: %v", again, err)
		}
		tok2.APIBaseURLDefaulted = tok.APIBaseURLDefaulted // the re-encoded answer names the default
		if diff := cmp.Diff(tok, tok2, secretComparer); diff != "" {
			t.Fatalf("round trip mismatch (-first +second):\n%s", diff)
		}
	})
}
