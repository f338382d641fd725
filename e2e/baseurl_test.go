package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/openai/openai-go/v3"

	"github.com/copilot-broker/copilot-broker/internal/testutil"
)

// sandboxAPIHost is the Copilot API name the TLS sandbox advertises in its
// tokens: under .githubcopilot.com, so the proxy's default host check
// accepts it, and resolvable only through --connect-to.
const sandboxAPIHost = "api.sandbox.githubcopilot.com"

var sandboxListeningTLS = regexp.MustCompile(`sandbox listening on (https://\S+)`)

// TestTokenBaseURLOverTLS runs the production path of the Copilot API's base
// URL: no --copilot-api-url, so the proxy takes the token's own
// endpoints.api (https://api.sandbox.githubcopilot.com), checks its host,
// dials the sandbox through --connect-to and verifies the sandbox's
// certificate for that name against --upstream-ca-file.
func TestTokenBaseURLOverTLS(t *testing.T) {
	t.Parallel()
	pki := testutil.NewPKI(t, sandboxAPIHost, "127.0.0.1")
	tokenFile := filepath.Join(t.TempDir(), "github-token")
	p := startProc(t, "sandbox", built.sandbox, []string{
		"--addr", anyPort, "--github-token-file", tokenFile, "--chunk-delay", "0s",
		"--tls-cert", pki.CertFile, "--tls-key", pki.KeyFile,
		"--api-url", "https://" + sandboxAPIHost,
	}, nil)
	url := p.boundAddrs(t, sandboxListeningTLS)[0]
	sb := &sandboxProc{proc: p, url: url, tokenFile: tokenFile, client: newHTTPClient(t)}
	_, port, err := net.SplitHostPort(url[len("https://"):])
	if err != nil {
		t.Fatal(err)
	}
	// The broker reaches the sandbox's fake GitHub at https://127.0.0.1:P,
	// trusting the test CA through the standard SSL_CERT_FILE.
	b := startBrokerEnv(t, sb, []string{"SSL_CERT_FILE=" + pki.CAFile})
	if tok := b.validToken(t); tok.GetApiBaseUrl() != "https://"+sandboxAPIHost {
		t.Fatalf("broker token api_base_url = %q; want https://%s", tok.GetApiBaseUrl(), sandboxAPIHost)
	}
	connectTo := fmt.Sprintf("%s:443:127.0.0.1:%s", sandboxAPIHost, port)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	t.Run("connect-to and CA", func(t *testing.T) {
		px := startProxyArgs(t, b, "--upstream-ca-file", pki.CAFile, "--connect-to", connectTo)
		const prompt = "hello over TLS"
		oai := openAIClient(t, px)
		resp, err := oai.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
			Model:    chatModel,
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(prompt)},
		})
		if err != nil {
			t.Fatalf("Chat.Completions.New: %v", err)
		}
		if len(resp.Choices) != 1 || resp.Choices[0].Message.Content != wantReply(prompt) {
			t.Errorf("Chat.Completions.New = %+v; want one choice with %q", resp.Choices, wantReply(prompt))
		}
		if _, err := streamMessage(ctx, anthropicClient(t, px), "streamed over TLS", nil); err != nil {
			t.Errorf("streamed Anthropic message: %v", err)
		}
	})

	t.Run("no CA", func(t *testing.T) {
		// Same address, but the system's roots: the sandbox's certificate
		// is refused and the client gets a 502 in its own dialect.
		px := startProxyArgs(t, b, "--connect-to", connectTo)
		oai := openAIClient(t, px)
		_, err := oai.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
			Model:    chatModel,
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("refused")},
		})
		var oerr *openai.Error
		if !errors.As(err, &oerr) || oerr.StatusCode != http.StatusBadGateway {
			t.Errorf("chat completion with an untrusted upstream certificate = %v; want a 502 OpenAI error", err)
		}
		ant := anthropicClient(t, px)
		_, err = ant.Messages.New(ctx, anthropic.MessageNewParams{
			Model: claudeModel, MaxTokens: 16,
			Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("refused"))},
		})
		var aerr *anthropic.Error
		if !errors.As(err, &aerr) || aerr.StatusCode != http.StatusBadGateway {
			t.Errorf("Anthropic message with an untrusted upstream certificate = %v; want a 502 Anthropic error", err)
		}
	})

	t.Run("host not allowed", func(t *testing.T) {
		// An allow list without .githubcopilot.com refuses the token's base
		// URL: once the proxy holds the token, requests get 503 naming the
		// refusal and /readyz stays 503.
		px := startProxyNoWait(t, b, "--upstream-ca-file", pki.CAFile, "--connect-to", connectTo,
			"--allowed-api-hosts", ".ghe.com")
		oai := openAIClient(t, px)
		var last error
		waitFor(t, startTimeout, "a 503 refusing the base URL", func() bool {
			_, last = oai.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
				Model:    chatModel,
				Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("refused")},
			})
			var oerr *openai.Error
			return errors.As(last, &oerr) && oerr.StatusCode == http.StatusServiceUnavailable &&
				strings.Contains(oerr.Message, "refusing Copilot API base URL")
		})
		resp, err := newHTTPClient(t).Get(px.adminURL + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("/readyz with a refused api_base_url = %d; want 503", resp.StatusCode)
		}
	})
}
