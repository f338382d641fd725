package server

import (
	"bufio"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
)

// metricsPage is one scrape of the admin /metrics endpoint.
type metricsPage struct {
	body    string
	samples map[string]float64 // by series as exposed: name{label="value",...}
}

// scrape fetches /metrics from the proxy's admin listener over HTTP.
func scrape(t *testing.T, p *Server) metricsPage {
	t.Helper()
	code, body := get(t, "http://"+p.Addrs().Admin+"/metrics")
	if code != 200 {
		t.Fatalf("GET /metrics = %d; want 200", code)
	}
	m := metricsPage{body: body, samples: map[string]float64{}}
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if i < 0 || err != nil {
			t.Fatalf("/metrics line %q: not a sample", line)
		}
		m.samples[line[:i]] = v
	}
	return m
}

// waitMetrics scrapes until every series in want has its value, and returns
// that scrape. It polls because the proxy counts a request after the client
// has its answer, and the broker gauges change as the watch stream does.
func waitMetrics(t *testing.T, p *Server, want map[string]float64) metricsPage {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		m := scrape(t, p)
		var diff []string
		for s, v := range want {
			if got, ok := m.samples[s]; !ok || got != v {
				diff = append(diff, fmt.Sprintf("%s = %v (present %v); want %v", s, got, ok, v))
			}
		}
		if len(diff) == 0 {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("/metrics after 15 s:\n%s", strings.Join(diff, "\n"))
		}
		time.Sleep(10 * time.Millisecond) // polling with a deadline
	}
}

const (
	connectedSeries  = "copilot_proxy_broker_connected"
	reconnectsSeries = "copilot_proxy_broker_reconnects_total"
	expirySeries     = "copilot_proxy_token_expiry_timestamp_seconds"
)

func requestsSeries(route, status, key string) string {
	return fmt.Sprintf(`copilot_proxy_requests_total{code=%q,key=%q,route=%q}`, status, key, route)
}

func latencyCount(route string) string {
	return fmt.Sprintf(`copilot_proxy_upstream_latency_seconds_count{route=%q}`, route)
}

// TestAdminMetrics drives requests by two keys on two routes, a refused key
// and a broker restart, and reads the admin /metrics page as Prometheus
// would.
func TestAdminMetrics(t *testing.T) {
	st := startStack(t, stackOpts{})
	const bobKey = "bob-api-key-0123456789"
	before := waitMetrics(t, st.proxy, map[string]float64{connectedSeries: 1})

	requests := []struct {
		path, body string
		hdr        map[string]string
		want       int
	}{
		{"/v1/chat/completions", chatBody, nil, 200},
		{"/v1/chat/completions", chatBody, nil, 200},
		{"/v1/chat/completions", chatBody, map[string]string{"Authorization": "Bearer " + bobKey}, 200},
		{"/v1/messages", messagesBody, map[string]string{"Authorization": "", "X-Api-Key": bobKey}, 200},
		{"/v1/chat/completions", chatBody, map[string]string{"Authorization": "Bearer not-a-key-0123456789"}, 401},
		{"/v1/messages", messagesBody, map[string]string{"Authorization": "", "X-Api-Key": "not-a-key-0123456789"}, 401},
	}
	for _, r := range requests {
		if resp, body := st.do("POST", r.path, r.body, r.hdr); resp.StatusCode != r.want {
			t.Fatalf("POST %s = %d %s; want %d", r.path, resp.StatusCode, body, r.want)
		}
	}
	m := waitMetrics(t, st.proxy, map[string]float64{
		requestsSeries("/v1/chat/completions", "200", "alice"): 2,
		requestsSeries("/v1/chat/completions", "200", "bob"):   1,
		requestsSeries("/v1/messages", "200", "bob"):           1,
		requestsSeries("/v1/chat/completions", "401", "-"):     1,
		requestsSeries("/v1/messages", "401", "-"):             1,
		// Refused requests never go upstream.
		latencyCount("/v1/chat/completions"): 3,
		latencyCount("/v1/messages"):         1,
		connectedSeries:                      1,
	})
	if n := strings.Count(m.body, "copilot_proxy_requests_total{"); n != 5 {
		t.Errorf("/metrics has %d copilot_proxy_requests_total series; want 5 (no others)", n)
	}
	tok, err := st.proxy.Token()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := m.samples[expirySeries], float64(tok.ExpiresAt.Unix()); got != want {
		t.Errorf("%s = %v; want %v (the held token's expiry)", expirySeries, got, want)
	}

	if err := st.broker.Close(); err != nil {
		t.Fatal(err)
	}
	waitMetrics(t, st.proxy, map[string]float64{connectedSeries: 0})
	st.startBroker(st.grpc)
	after := waitMetrics(t, st.proxy, map[string]float64{connectedSeries: 1})
	if got, was := after.samples[reconnectsSeries], before.samples[reconnectsSeries]; got <= was {
		t.Errorf("%s = %v after the broker came back; want more than %v", reconnectsSeries, got, was)
	}
	// The new broker may hand out a new token; the gauge follows the one held.
	deadline := time.Now().Add(15 * time.Second)
	for {
		tok, err := st.proxy.Token()
		if err != nil {
			t.Fatal(err)
		}
		got, want := scrape(t, st.proxy).samples[expirySeries], float64(tok.ExpiresAt.Unix())
		if got == want {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v after the restart; want %v (the held token's expiry)", expirySeries, got, want)
		}
		time.Sleep(10 * time.Millisecond) // polling with a deadline
	}
}
