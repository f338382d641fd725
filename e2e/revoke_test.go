package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/openai/openai-go/v3"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
)

// TestRevokedCredentialReplacedByTokenFile is scenario (d): GitHub revokes the
// broker's credential. At its next refresh the broker reports REJECTED (REST
// FAILED_PRECONDITION, health NOT_SERVING, not ready). A proxy with the
// defaults drops its cached token at once and answers 503; one run with
// --serve-cached-when-rejected keeps serving its cached token until that
// expires, then answers 503 in each dialect with a message naming the cause. Writing a new token to the token
// file restores service; no process is restarted.
func TestRevokedCredentialReplacedByTokenFile(t *testing.T) {
	t.Parallel()
	// The token lives 11 or 12 s and is refreshed at about 6 s.
	const lifetime, refreshIn = 12 * time.Second, 6 * time.Second
	sb := startSandbox(t, sandboxOpts{lifetime: lifetime, refreshIn: refreshIn, chunks: 3, chunkDelay: 10 * time.Millisecond})
	br := startBroker(t, sb, "--token-file-poll", "500ms")
	first := br.validToken(t)
	px := startProxy(t, br, sb, "--serve-cached-when-rejected")
	strict := startProxy(t, br, sb)
	oai := openAIClient(t, px)
	ant := anthropicClient(t, px)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	brokerPID, proxyPID := br.cmd.Process.Pid, px.cmd.Process.Pid

	sb.revoke(t, sb.githubToken(t))
	revokedAt := time.Now()

	// REJECTED at the next refresh.
	var status int
	var body string
	waitFor(t, 2*lifetime, "the broker to report the credential rejected", func() bool {
		status, _, body = br.token(t)
		return status != http.StatusOK && status != 0
	})
	rejectedAt := time.Now()
	var gwErr struct {
		Code    codes.Code `json:"code"`
		Message string     `json:"message"`
	}
	if err := json.Unmarshal([]byte(body), &gwErr); err != nil || gwErr.Code != codes.FailedPrecondition || !strings.Contains(strings.ToLower(gwErr.Message), "reject") {
		t.Errorf("GET /v1/token after the revocation = %d %s; want FAILED_PRECONDITION naming the rejected credential", status, body)
	}
	// The API service's health follows the token state through a
	// subscription: allow it a moment. The whole server ("") stays SERVING:
	// the process is alive.
	waitFor(t, 5*time.Second, "grpc health of the API service NOT_SERVING when REJECTED", func() bool {
		return br.health(t, apiService) == healthpb.HealthCheckResponse_NOT_SERVING
	})
	if err := pollHTTP(br.proc, br.adminURL+"/readyz", 500*time.Millisecond); err == nil {
		t.Error("broker /readyz when REJECTED = 200; want not ready")
	}
	t.Logf("REJECTED %s after the revocation: %s", rejectedAt.Sub(revokedAt).Round(time.Millisecond), gwErr.Message)

	// The proxy with the defaults stops using its cached token as soon as
	// the watch brings REJECTED: revoking cuts access.
	strictOAI := openAIClient(t, strict)
	waitFor(t, 5*time.Second, "the default proxy to answer 503 after REJECTED", func() bool {
		_, err := strictOAI.Chat.Completions.New(ctx, chatParams("after REJECTED"))
		var apiErr *openai.Error
		return errors.As(err, &apiErr) && apiErr.StatusCode == http.StatusServiceUnavailable && strings.Contains(apiErr.Message, "REJECTED")
	})
	t.Logf("default proxy: 503 %s after the broker reported REJECTED (cached token valid for %s more)",
		time.Since(rejectedAt).Round(time.Millisecond), time.Until(first.GetExpiresAt().AsTime()).Round(time.Second))
	if err := pollHTTP(strict.proc, strict.adminURL+"/readyz", 500*time.Millisecond); err == nil {
		t.Error("default proxy /readyz after REJECTED = 200; want not ready")
	}

	// The proxy still holds a token that GitHub issued before the revocation
	// and that has not expired: clients are still served.
	expiry := first.GetExpiresAt().AsTime()
	if time.Until(expiry) > 2*time.Second {
		if _, err := streamChat(ctx, oai, "still served on the cached token", nil); err != nil {
			t.Errorf("request %s before the cached token's expiry: %v; want it served", time.Until(expiry).Round(time.Millisecond), err)
		}
	}

	// Once it expires: 503 naming the cause, in the OpenAI dialect ...
	type answer struct {
		status int
		at     time.Duration // relative to the cached token's expiry
	}
	var before []answer
	waitFor(t, time.Until(expiry)+10*time.Second, "the proxy to answer 503", func() bool {
		at := time.Since(expiry) // when the request was sent
		_, err := oai.Chat.Completions.New(ctx, chatParams("after expiry"))
		var apiErr *openai.Error
		switch {
		case err == nil:
			before = append(before, answer{http.StatusOK, at})
			return false
		case !errors.As(err, &apiErr):
			t.Fatalf("request %s after the token's expiry: %v; want an HTTP answer", at, err)
		case apiErr.StatusCode != http.StatusServiceUnavailable:
			before = append(before, answer{apiErr.StatusCode, at})
			return false
		}
		if !strings.Contains(apiErr.Message, "REJECTED") {
			t.Errorf("503 message %q; want it to name the cause (the broker's REJECTED status)", apiErr.Message)
		}
		t.Logf("OpenAI SDK, %s after the token's expiry: %d %s", at.Round(time.Millisecond), apiErr.StatusCode, apiErr.Message)
		return true
	})
	// Every answer before the 503 is a 200: the broker's local expiry comes
	// before GitHub's (tokens.dateMargin), so no client meets the API's 401.
	for _, a := range before {
		if a.status != http.StatusOK {
			t.Errorf("answer %d at %s from the cached token's expiry; want 200 before it, then 503", a.status, a.at)
		}
	}
	// ... and in the Anthropic one.
	_, err := ant.Messages.New(ctx, anthropic.MessageNewParams{
		Model: claudeModel, MaxTokens: 16,
		Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("after expiry"))},
	})
	var antErr *anthropic.Error
	if !errors.As(err, &antErr) || antErr.StatusCode != http.StatusServiceUnavailable || !strings.Contains(antErr.RawJSON(), "REJECTED") {
		t.Errorf("Anthropic SDK after expiry: %v; want a 503 naming the REJECTED status", err)
	} else if !strings.Contains(antErr.RawJSON(), `"type":"error"`) {
		t.Errorf("Anthropic 503 body %s; want the Anthropic error shape", antErr.RawJSON())
	}
	if err := pollHTTP(px.proc, px.adminURL+"/readyz", 500*time.Millisecond); err == nil {
		t.Error("proxy /readyz without a usable token = 200; want not ready")
	}

	// A new credential in the token file, and nothing restarted.
	newToken := "gho_" + randomKey(t)[:36]
	sb.accept(t, newToken)
	writeSecretFile(t, br.tokenFile, newToken+"\n")
	replacedAt := time.Now()
	waitFor(t, 30*time.Second, "the proxy to serve again", func() bool {
		_, err := streamChat(ctx, oai, "served again", nil)
		return err == nil
	})
	t.Logf("served again %s after the token file was replaced", time.Since(replacedAt).Round(time.Millisecond))
	_, tok, _ := br.token(t)
	if tok.GetStatus() != brokerv1.TokenStatus_TOKEN_STATUS_VALID || tok.GetGeneration() <= first.GetGeneration() {
		t.Errorf("broker after the new token file: status %v generation %d; want VALID with a generation above %d", tok.GetStatus(), tok.GetGeneration(), first.GetGeneration())
	}
	if br.exited() || px.exited() || br.cmd.Process.Pid != brokerPID || px.cmd.Process.Pid != proxyPID {
		t.Error("the broker or the proxy was restarted; want the same processes throughout")
	}
}

// chatParams is a small non-streamed chat completion request.
func chatParams(prompt string) openai.ChatCompletionNewParams {
	return openai.ChatCompletionNewParams{
		Model:    chatModel,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(prompt)},
	}
}
