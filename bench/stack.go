package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/copilot-broker/copilot-broker/bench/internal/proc"
	"github.com/copilot-broker/copilot-broker/internal/identity"
	"github.com/copilot-broker/copilot-broker/internal/sandbox"
	"github.com/copilot-broker/copilot-broker/internal/secret"
)

// brokerProc is a running broker binary.
type brokerProc struct {
	*proc.Process
	GRPCAddr, HTTPAddr, AdminAddr string
	Key                           string // broker key the clients present
}

// proxyProc is a running proxy binary.
type proxyProc struct {
	*proc.Process
	Addr, AdminAddr string
	Key             string // API key the clients present
}

func randomKey() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// writeKeys writes a keys file with one key named name.
func writeKeys(dir, name, key string) (string, error) {
	path := filepath.Join(dir, name+".keys")
	return path, os.WriteFile(path, []byte(name+":"+key+"\n"), 0o600)
}

func freeAddrs(n int) ([]string, error) {
	out := make([]string, n)
	for i := range out {
		a, err := proc.FreeAddr()
		if err != nil {
			return nil, err
		}
		out[i] = a
	}
	return out, nil
}

// startBroker runs `broker serve` against up, waits until it holds a token,
// and registers it to be stopped at the end.
func (b *bench) startBroker(up brokerUpstream, name string) (*brokerProc, error) {
	return b.startBrokerArgs(up, name)
}

// brokerUpstream is the sandbox a broker exchanges its GitHub token at:
// one in this process (*upstream) or in a child (*remoteUpstream).
type brokerUpstream interface {
	exchangeURL() string
	githubToken() secret.Secret
}

// startBrokerArgs is startBroker with extra flags.
func (b *bench) startBrokerArgs(up brokerUpstream, name string, extra ...string) (*brokerProc, error) {
	if err := b.need("broker"); err != nil {
		return nil, err
	}
	return b.startBrokerBin(b.bins["broker"], up, name, extra...)
}

// startBrokerBin runs the broker binary bin against up.
func (b *bench) startBrokerBin(bin string, up brokerUpstream, name string, extra ...string) (*brokerProc, error) {
	dir := b.dir(name)
	addrs, err := freeAddrs(3)
	if err != nil {
		return nil, err
	}
	key := randomKey()
	keys, err := writeKeys(dir, "bench", key)
	if err != nil {
		return nil, err
	}
	p, err := proc.Start(proc.Spec{
		Name: name, Path: bin,
		Args: append([]string{"serve", "--grpc-addr", addrs[0], "--http-addr", addrs[1], "--admin-addr", addrs[2],
			"--github-api-url", up.exchangeURL(), "--keys-file", keys, "--log-format", "json"}, extra...),
		Env:     []string{"GITHUB_TOKEN=" + up.githubToken().Reveal()},
		LogPath: filepath.Join(dir, "broker.log"),
	})
	if err != nil {
		return nil, err
	}
	b.procs = append(b.procs, p)
	if err := proc.WaitHTTP(b.ctx, p, "http://"+addrs[2]+"/readyz", 20*time.Second); err != nil {
		b.stop(p)
		return nil, fmt.Errorf("%w (log: %s)", err, tail(filepath.Join(dir, "broker.log")))
	}
	return &brokerProc{Process: p, GRPCAddr: addrs[0], HTTPAddr: addrs[1], AdminAddr: addrs[2], Key: key}, nil
}

// startProxy runs `proxy serve` against br, forwarding to up, and waits until
// it is ready (holds a token).
func (b *bench) startProxy(up *upstream, br *brokerProc, name string) (*proxyProc, error) {
	if err := b.need("proxy"); err != nil {
		return nil, err
	}
	return b.startProxyBin(b.bins["proxy"], up, br, name)
}

// startProxyBin is startProxy with a given binary.
func (b *bench) startProxyBin(bin string, up *upstream, br *brokerProc, name string) (*proxyProc, error) {
	return b.startProxyArgs(bin, br, name, "--copilot-api-url", up.URL)
}

// startProxyTLS runs the proxy against up's TLS listener, trusting its test
// CA; http2 says whether it may speak HTTP/2 to it.
func (b *bench) startProxyTLS(bin string, up *upstream, br *brokerProc, name string, http2 bool) (*proxyProc, error) {
	return b.startProxyArgs(bin, br, name, "--copilot-api-url", up.TLSURL,
		"--upstream-ca-file", up.pki.CAPath, fmt.Sprintf("--upstream-http2=%t", http2))
}

// startProxyArgs runs a proxy binary with the upstream flags given.
func (b *bench) startProxyArgs(bin string, br *brokerProc, name string, upstreamArgs ...string) (*proxyProc, error) {
	dir := b.dir(name)
	addrs, err := freeAddrs(2)
	if err != nil {
		return nil, err
	}
	key := randomKey()
	keys, err := writeKeys(dir, "bench", key)
	if err != nil {
		return nil, err
	}
	p, err := proc.Start(proc.Spec{
		Name: name, Path: bin,
		Args: append([]string{"serve", "--addr", addrs[0], "--admin-addr", addrs[1], "--broker-addr", br.GRPCAddr,
			"--keys-file", keys}, upstreamArgs...),
		Env:     []string{"PROXY_BROKER_KEY=" + br.Key},
		LogPath: filepath.Join(dir, "proxy.log"),
	})
	if err != nil {
		return nil, err
	}
	b.procs = append(b.procs, p)
	if err := proc.WaitHTTP(b.ctx, p, "http://"+addrs[1]+"/readyz", 20*time.Second); err != nil {
		b.stop(p)
		return nil, fmt.Errorf("%w (log: %s)", err, tail(filepath.Join(dir, "proxy.log")))
	}
	return &proxyProc{Process: p, Addr: addrs[0], AdminAddr: addrs[1], Key: key}, nil
}

// tail returns the end of a log file, for error messages.
func tail(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if len(data) > 1500 {
		data = data[len(data)-1500:]
	}
	return string(data)
}

// steady is the stack of sections 1, 2 and 4: a sandbox issuing long-lived
// tokens, a broker, a proxy and nginx. Parts that cannot start are nil with
// their error kept, so the other comparisons still run.
type steady struct {
	up       *upstream
	token    string // a Copilot token for the direct and nginx paths
	broker   *brokerProc
	proxy    *proxyProc
	alt      map[string]*proxyProc // -compare-proxy, by target name
	nginx    *proc.Process
	nginxURL string
	// The Go floor (floor.go) to the plain and to the TLS upstream, the
	// latter over HTTP/1.1 and over HTTP/2.
	floor, floorTLS, floorTLSH2          *proc.Process
	floorURL, floorTLSURL, floorTLSH2URL string
	// The same over the upstream's TLS listener: the proxy with
	// --upstream-http2=false and with its default (HTTP/2), and nginx with
	// proxy_ssl.
	proxyTLS, proxyTLSH2 *proxyProc
	altTLS               map[string]*proxyProc // -compare-proxy over TLS: proxy-NAME and proxy-h2-NAME
	nginxTLS             *proc.Process
	nginxTLSURL          string
	errs                 map[string]error
}

func (b *bench) steadyStack() (*steady, error) {
	if b.steadyCache != nil {
		return b.steadyCache, nil
	}
	up, err := startUpstream(sandbox.Config{RequestLogSize: -1, TokenLifetime: time.Hour, RefreshIn: 50 * time.Minute})
	if err != nil {
		return nil, err
	}
	b.onClose(up.close)
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	tok, err := up.copilotToken(ctx)
	if err != nil {
		return nil, err
	}
	st := &steady{up: up, token: tok, errs: map[string]error{}}
	if st.broker, err = b.startBroker(up, "broker-steady"); err != nil {
		st.errs["broker"] = err
		st.errs["proxy"] = err
	} else if st.proxy, err = b.startProxy(up, st.broker, "proxy-steady"); err != nil {
		st.errs["proxy"] = err
	}
	st.alt = map[string]*proxyProc{}
	for _, kv := range strings.Split(b.opts.altProxy, ",") {
		name, path, ok := strings.Cut(kv, "=")
		if !ok || st.broker == nil {
			continue
		}
		p, err := b.startProxyBin(path, up, st.broker, "proxy-"+name)
		if err != nil {
			st.errs["proxy-"+name] = err
			continue
		}
		st.alt["proxy-"+name] = p
	}
	st.nginx, st.nginxURL, err = b.startNginxTo(up.ln.Addr().String(), tok, "")
	if err != nil {
		st.errs["nginx"] = err
	}
	if st.floor, st.floorURL, err = b.startFloor("go-floor", up.URL, tok, "", false); err != nil {
		st.errs["go-floor"] = err
	}
	if err := up.serveTLS(b.dir("pki")); err != nil {
		for _, k := range []string{"proxy-tls", "proxy-tls-h2", "nginx-tls", "go-floor-tls", "go-floor-tls-h2"} {
			st.errs[k] = err
		}
	} else {
		if st.broker != nil {
			if st.proxyTLS, err = b.startProxyTLS(b.bins["proxy"], up, st.broker, "proxy-tls", false); err != nil {
				st.errs["proxy-tls"] = err
			}
			if st.proxyTLSH2, err = b.startProxyTLS(b.bins["proxy"], up, st.broker, "proxy-tls-h2", true); err != nil {
				st.errs["proxy-tls-h2"] = err
			}
			st.altTLS = b.startAltTLS(up, st.broker, st.errs)
		}
		st.nginxTLS, st.nginxTLSURL, err = b.startNginxTo(up.tlsLn.Addr().String(), tok, up.pki.CAPath)
		if err != nil {
			st.errs["nginx-tls"] = err
		}
		if st.floorTLS, st.floorTLSURL, err = b.startFloor("go-floor-tls", up.TLSURL, tok, up.pki.CAPath, false); err != nil {
			st.errs["go-floor-tls"] = err
		}
		if st.floorTLSH2, st.floorTLSH2URL, err = b.startFloor("go-floor-tls-h2", up.TLSURL, tok, up.pki.CAPath, true); err != nil {
			st.errs["go-floor-tls-h2"] = err
		}
	}
	for k, e := range st.errs {
		b.logf("steady stack: %s: %v", k, e)
	}
	b.steadyCache = st
	return st, nil
}

// startAltTLS starts each -compare-proxy binary against the TLS upstream
// twice, as proxy-NAME (HTTP/1.1) and proxy-h2-NAME (HTTP/2), noting in
// errs the ones that cannot start.
func (b *bench) startAltTLS(up *upstream, br *brokerProc, errs map[string]error) map[string]*proxyProc {
	alt := map[string]*proxyProc{}
	for _, kv := range strings.Split(b.opts.altProxy, ",") {
		name, path, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		for _, http2 := range []bool{false, true} {
			target := "proxy-" + name
			if http2 {
				target = "proxy-h2-" + name
			}
			p, err := b.startProxyTLS(path, up, br, target+"-tls", http2)
			if err != nil {
				errs[target+"-tls"] = err
				continue
			}
			alt[target] = p
		}
	}
	return alt
}

// startNginxTo starts nginx forwarding to upstream (host:port), over TLS
// verified against caPath when it is set.
func (b *bench) startNginxTo(upstream, token, caPath string) (*proc.Process, string, error) {
	addr, err := proc.FreeAddr()
	if err != nil {
		return nil, "", err
	}
	cfg := nginxConfig{Dir: b.dir("nginx"), Listen: addr, Upstream: upstream, Token: token,
		Workers: "auto", KeepAlive: 64, Headers: copilotHeaders(), UpstreamCA: caPath}
	p, err := startNginx(b.ctx, cfg)
	if err != nil {
		return nil, "", err
	}
	b.procs = append(b.procs, p)
	return p, "http://" + addr, nil
}

// copilotHeaders are the headers docs/protocol.md section 4 requires,
// besides Authorization and X-Request-Id.
func copilotHeaders() [][2]string {
	return [][2]string{
		{"Copilot-Integration-Id", "vscode-chat"},
		{"Editor-Version", identity.DefaultEditorVersion},
		{"Editor-Plugin-Version", identity.DefaultEditorPluginVersion},
		{"User-Agent", identity.DefaultUserAgent},
		{"Openai-Intent", "conversation-agent"},
		{"X-Github-Api-Version", identity.DefaultAPIVersion},
		{"X-Initiator", "user"},
	}
}

// directHeader is what a client calling the sandbox directly sends.
func directHeader(token string) http.Header {
	h := http.Header{}
	for _, kv := range copilotHeaders() {
		h.Set(kv[0], kv[1])
	}
	h.Set("Authorization", "Bearer "+token)
	h.Set("Content-Type", "application/json")
	return h
}
