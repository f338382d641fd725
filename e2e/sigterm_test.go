package e2e

import (
	"context"
	"net/http"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestProxySIGTERMMidStream is scenario (e): a proxy told to stop (SIGTERM,
// as Kubernetes does) while streams are in flight lets them finish: an
// OpenAI and an Anthropic stream, each three seconds long, arrive whole, and
// the proxy reports not ready and refuses new connections meanwhile, and it
// then exits 0 without waiting out its grace period.
func TestProxySIGTERMMidStream(t *testing.T) {
	t.Parallel()
	const chunks, delay = 20, 150 * time.Millisecond
	sb := startSandbox(t, sandboxOpts{lifetime: 30 * time.Minute, refreshIn: 25 * time.Minute, chunks: chunks, chunkDelay: delay})
	br := startBroker(t, sb)
	px := startProxy(t, br, sb)
	oai := openAIClient(t, px)
	ant := anthropicClient(t, px)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)

	// Each stream reports on started once it has two events, then its result.
	started := make(chan struct{}, 2)
	results := make(chan error, 2)
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	wg.Go(func() {
		_, err := streamChat(ctx, oai, "a long OpenAI stream", func(n int) {
			if n == 2 {
				started <- struct{}{}
			}
		})
		results <- err
	})
	wg.Go(func() {
		_, err := streamMessage(ctx, ant, "a long Anthropic stream", func(n int) {
			if n == 2 {
				started <- struct{}{}
			}
		})
		results <- err
	})
	for range 2 {
		select {
		case <-started:
		case err := <-results:
			t.Fatalf("a stream ended before SIGTERM was sent: %v", err)
		case <-ctx.Done():
			t.Fatal("the streams did not start")
		}
	}
	px.signal(t, syscall.SIGTERM)
	termAt := time.Now()

	// While the streams drain, the proxy reports not ready and takes no new
	// connections, so a load balancer sends new work elsewhere.
	probe := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: time.Second}
	waitFor(t, 2*time.Second, "proxy /readyz to fail after SIGTERM", func() bool {
		resp, err := probe.Get(px.adminURL + "/readyz")
		if err != nil {
			return true
		}
		resp.Body.Close()
		return resp.StatusCode != http.StatusOK
	})
	waitFor(t, 2*time.Second, "the proxy to refuse new connections after SIGTERM", func() bool {
		resp, err := probe.Get(px.url + "/v1/models")
		if err != nil {
			return true
		}
		resp.Body.Close()
		return false
	})
	if time.Since(termAt) > 2*time.Second {
		t.Errorf("not-ready and refusal checks took %s; the streams may have ended before them", time.Since(termAt))
	}

	for range 2 {
		if err := <-results; err != nil {
			t.Errorf("stream in flight at SIGTERM: %v; want it to complete", err)
		}
	}
	streamsDone := time.Since(termAt)
	// The default grace period is a minute; a proxy that waits it out (or
	// hangs) fails here.
	if err := px.wait(t, 20*time.Second); err != nil {
		t.Errorf("proxy exit after SIGTERM: %v; want status 0", err)
	}
	t.Logf("streams finished %s after SIGTERM, proxy exited %s after it",
		streamsDone.Round(time.Millisecond), time.Since(termAt).Round(time.Millisecond))
	if streamsDone < time.Second {
		t.Errorf("streams finished %s after SIGTERM; want them still running when it was sent (about 3 s each)", streamsDone)
	}
}
