package broker

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

const (
	keyAll   = "key-all-0123456789abcdef"
	keyStar  = "key-star-0123456789abcdef"
	keyAlice = "key-alice-0123456789abcdef"
	keyPool  = "key-pool-0123456789abcdef"
)

// newScopeEdge is a broker edge with the default account, alice and bob, and
// keys for all (no third field), '*', alice alone, and alice+bob.
func newScopeEdge(t *testing.T) *edge {
	t.Helper()
	accounts := map[string]Source{}
	for _, name := range []string{"", "alice", "bob"} {
		st := validState(1)
		st.Account = name
		f := newFake(st)
		f.forceRes = st
		accounts[name] = f
	}
	return newEdgeWith(t, "all:"+keyAll+"\nstar:"+keyStar+":*\nalice:"+keyAlice+":alice\npool:"+keyPool+":bob,alice\n",
		accounts, accounts[""].(*fakeSource))
}

// TestKeyAccountScope checks every account through every route with every
// kind of key: an account the key does not name is NOT_FOUND (404 on REST),
// exactly like an account that does not exist.
func TestKeyAccountScope(t *testing.T) {
	e := newScopeEdge(t)
	tests := []struct {
		key     string
		account string
		want    bool
	}{
		{keyAll, "", true}, {keyAll, "alice", true}, {keyAll, "bob", true},
		{keyStar, "", true}, {keyStar, "alice", true}, {keyStar, "bob", true},
		{keyAlice, "", false}, {keyAlice, "alice", true}, {keyAlice, "bob", false},
		{keyPool, "", false}, {keyPool, "alice", true}, {keyPool, "bob", true},
		{keyAll, "carol", false}, {keyAlice, "carol", false},
	}
	for _, tt := range tests {
		ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+tt.key)
		wantCode := codes.OK
		wantHTTP := http.StatusOK
		if !tt.want {
			wantCode, wantHTTP = codes.NotFound, http.StatusNotFound
		}
		name := tt.key[:len(tt.key)-17] + "/" + tt.account
		t.Run(name, func(t *testing.T) {
			if _, err := e.client.GetToken(ctx, &brokerv1.GetTokenRequest{Account: tt.account}); status.Code(err) != wantCode {
				t.Errorf("GetToken = %v; want %v", err, wantCode)
			}
			if _, err := e.client.RefreshToken(ctx, &brokerv1.RefreshTokenRequest{Account: tt.account, RejectedGeneration: 1}); status.Code(err) != wantCode {
				t.Errorf("RefreshToken = %v; want %v", err, wantCode)
			}
			wctx, cancel := context.WithCancel(ctx)
			defer cancel()
			stream, err := e.client.WatchToken(wctx, &brokerv1.WatchTokenRequest{Account: tt.account})
			if err == nil {
				_, err = stream.Recv()
			}
			if status.Code(err) != wantCode {
				t.Errorf("WatchToken = %v; want %v", err, wantCode)
			}
			for _, r := range []struct{ method, path string }{
				{"GET", "/v1/token?account=" + tt.account},
				{"POST", "/v1/token:refresh"},
			} {
				var body io.Reader
				if r.method == "POST" {
					body = jsonBody(`{"account":"` + tt.account + `","rejectedGeneration":"1"}`)
				}
				if got := restStatus(t, e, r.method, r.path, tt.key, body); got != wantHTTP {
					t.Errorf("%s %s = %d; want %d", r.method, r.path, got, wantHTTP)
				}
			}
		})
	}
}

func TestKeyAccountScopeREST_Watch(t *testing.T) {
	e := newScopeEdge(t)
	for _, tt := range []struct {
		key, account string
		want         int
	}{
		{keyAlice, "alice", http.StatusOK},
		{keyAlice, "bob", http.StatusNotFound},
		{keyAlice, "", http.StatusNotFound},
		{keyPool, "bob", http.StatusOK},
	} {
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, "GET", e.rest.URL+"/v1/token:watch?account="+tt.account, nil)
		req.Header.Set("Authorization", "Bearer "+tt.key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		// The gateway answers a stream's first error with its HTTP status
		// only before the first message; NOT_FOUND comes before any.
		if resp.StatusCode != tt.want {
			t.Errorf("GET /v1/token:watch?account=%s = %d; want %d", tt.account, resp.StatusCode, tt.want)
		}
		resp.Body.Close()
		cancel()
	}
}

func jsonBody(s string) io.Reader { return strings.NewReader(s) }

// restStatus sends one REST request with key and returns its status.
func restStatus(t *testing.T, e *edge, method, path, key string, body io.Reader) int {
	t.Helper()
	req, err := http.NewRequest(method, e.rest.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := e.rest.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}
