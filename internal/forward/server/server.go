// Package server runs a whole proxy in one process: the broker watch client,
// the forwarding handler, the admin endpoints and the graceful shutdown.
// `proxy serve` is a thin layer of flags over it, and end-to-end tests and
// benchmarks start proxies with it:
//
//	p, err := server.Start(ctx, server.Config{
//		Addr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0",
//		BrokerAddr: brokerAddrs.GRPC, BrokerKey: key,
//		CopilotAPIURL: sandbox.URL, Keys: apiKeys,
//	})
//	if err != nil { ... }
//	defer p.Close()
//	_ = p.WaitReady(ctx) // a token is held
//	resp, err := http.Post("http://"+p.Addrs().HTTP+"/v1/chat/completions", ...)
//
// The proxy stops when ctx ends or [Server.Close] is called: it reports not
// ready, stops accepting, lets in-flight requests (streams included) finish
// within [Config.ShutdownGrace], then stops watching the broker.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
	"github.com/copilot-broker/copilot-broker/internal/forward"
	"github.com/copilot-broker/copilot-broker/internal/forward/brokerclient"
	"github.com/copilot-broker/copilot-broker/internal/forward/catalog"
	"github.com/copilot-broker/copilot-broker/internal/forward/keybudget"
	"github.com/copilot-broker/copilot-broker/internal/forward/pool"
	"github.com/copilot-broker/copilot-broker/internal/forward/statusreport"
	"github.com/copilot-broker/copilot-broker/internal/forward/streamcap"
	"github.com/copilot-broker/copilot-broker/internal/forward/usage"
	"github.com/copilot-broker/copilot-broker/internal/forward/usagereport"
	"github.com/copilot-broker/copilot-broker/internal/forward/wsresponses"
	"github.com/copilot-broker/copilot-broker/internal/identity"
	"github.com/copilot-broker/copilot-broker/internal/ops"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc"
)

// Addrs are the bound listen addresses, useful when Config asked for port 0.
type Addrs struct {
	HTTP, Admin string
}

// Server is a running proxy.
type Server struct {
	cfg      Config
	log      *slog.Logger
	addrs    Addrs
	tokens   *brokerclient.Set
	reporter *usagereport.Reporter  // nil: usage reporting off
	status   *statusreport.Reporter // nil: status reporting off
	gate     *keybudget.Gate        // nil with reporting off
	registry *prometheus.Registry
	draining atomic.Bool
	cancel   context.CancelFunc
	done     chan struct{}
	err      error
}

// ErrShuttingDown is what /readyz reports once a shutdown has begun.
var ErrShuttingDown = errors.New("shutting down")

// Start validates cfg, binds the listeners and starts serving. It returns
// once the listeners are bound; the token arrives asynchronously (see
// [Server.WaitReady]).
func Start(ctx context.Context, cfg Config) (*Server, error) {
	cfg = cfg.withDefaults()
	apiURL, err := cfg.check()
	if err != nil {
		return nil, err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	broker, conn, err := dialBroker(cfg)
	if err != nil {
		return nil, err
	}
	closeConn := func() {
		if conn != nil {
			conn.Close()
		}
	}
	acc := accountsOf(cfg)
	if cfg.KeysFromBroker {
		// A managed key may name any account, at any time.
		acc.all, acc.needDefault = true, true
	}
	var status *statusreport.Reporter // set below; the tracker tells it of new usage limits
	tracker := pool.New(pool.Config{Clock: cfg.Clock, ReservePercent: cfg.PoolReservePercent, OnUsage: func() {
		if status != nil {
			status.Changed()
		}
	}})
	// The upstream profile the broker pushes with the tokens; the built-in
	// default until the first message.
	profile := identity.NewHolder(identity.DefaultProfile(), "")
	reg.MustRegister(pool.NewCollector(tracker))
	tokens, err := newTokenSet(cfg, broker, acc, tracker, profile, reg)
	if err != nil {
		closeConn()
		return nil, err
	}
	transport, err := upstreamTransport(cfg)
	if err != nil {
		closeConn()
		return nil, err
	}
	metrics := forward.NewMetrics(reg)
	if status, err = newStatusReporter(cfg, conn, tracker, metrics, reg); err != nil {
		closeConn()
		return nil, err
	}
	var gate *keybudget.Gate
	if client := usageClient(cfg, conn); client != nil && cfg.UsageBuffer >= 0 {
		gate = keybudget.New(keybudget.Config{
			Client: client, ProxyID: cfg.ProxyID, Clock: cfg.Clock, Logger: cfg.Logger.With("component", "budgets"),
			AccountSpent: func(account string, reset time.Time) { tracker.QuotaSpent(account, reset) },
		})
	}
	reporter, err := newReporter(cfg, conn, reg, gate)
	if err != nil {
		closeConn()
		return nil, err
	}
	wsMetrics := wsresponses.NewMetrics(reg)
	var wsUpstream *wsresponses.Upstream
	if cfg.UpstreamWebSocket {
		client, err := upstreamWSClient(cfg)
		if err != nil {
			closeConn()
			return nil, err
		}
		wsUpstream = wsresponses.NewUpstream(wsresponses.UpstreamConfig{
			Inner: transport, HTTPClient: client, Metrics: wsMetrics, Logger: cfg.Logger.With("component", "ws-upstream"),
		})
	}
	aliases, err := openAliases(cfg, metrics)
	if err != nil {
		closeConn()
		return nil, err
	}
	keySet, stopKeys, err := startKeys(ctx, cfg, conn, reg)
	if err != nil {
		closeConn()
		return nil, err
	}
	fcfg := cfg.forwardConfig(forward.Config{
		Source: tokens.Source(cfg.Account), Accounts: tokens, Targets: acc.targets, Pool: tracker, Usage: usage.NewMetrics(reg),
		Profile: profile, Transport: transport, Metrics: metrics, APIURL: apiURL, KeySet: keySet,
		Models: &forward.ModelsConfig{Aliases: aliases, Refresh: cfg.CatalogRefresh},
	})
	if wsUpstream != nil {
		fcfg.Transport = wsUpstream
	}
	if reporter != nil {
		fcfg.UsageReporter, fcfg.Budgets = reporter, gate
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "copilot_proxy_key_budgets",
			Help: "Managed keys with a budget or rpm limit, as last received from the broker.",
		}, func() float64 { return float64(gate.Len()) }))
	}
	stopConn := closeConn
	closeConn = func() { stopKeys(); stopConn() }
	handler, err := forward.New(fcfg)
	if err != nil {
		closeConn()
		return nil, err
	}
	// The Responses WebSocket front takes upgrades of /v1/responses and
	// runs each turn through handler; everything else passes to it.
	front := wsresponses.New(wsresponses.Config{
		Inner: handler, Authenticate: handler.Authenticate, MaxMessageBytes: cfg.MaxBodyBytes,
		IdleTimeout: cfg.WSIdleTimeout, MaxConns: cfg.WSMaxConnections, MaxConnsPerKey: cfg.WSMaxConnectionsPerKey,
		Upstream: wsUpstream, Metrics: wsMetrics, Clock: cfg.Clock, Logger: cfg.Logger.With("component", "ws"),
	})

	lns, err := listen(cfg, reg)
	if err != nil {
		handler.Close()
		closeConn()
		return nil, err
	}
	s := &Server{
		cfg: cfg, log: cfg.Logger, tokens: tokens, reporter: reporter, status: status, gate: gate, registry: reg, done: make(chan struct{}),
		addrs: Addrs{HTTP: lns[0].Addr().String(), Admin: lns[1].Addr().String()},
	}
	streams := streamcap.New(cfg.MaxStreams, reg)
	proxySrv, adminSrv := httpServers(cfg, streams.Handler(front), ops.AdminHandler(s.Ready, reg))
	runCtx, cancel := context.WithCancel(ctx)
	s.cancel = cancel
	go s.run(runCtx, proxySrv, adminSrv, lns, transport, front, func() {
		handler.Close()
		closeConn()
	}, aliases)
	s.log.Info("proxy listening", "addr", s.addrs.HTTP, "admin_addr", s.addrs.Admin, "broker", cfg.BrokerAddr,
		"client_auth", cfg.Keys.Len() > 0 || cfg.KeysFromBroker, "keys_from_broker", cfg.KeysFromBroker, "copilot_api_url", cfg.CopilotAPIURL)
	return s, nil
}

// check refuses a configuration that exposes the proxy without keys or
// names an invalid identity, and returns the API URL override (nil: none).
func (cfg Config) check() (*url.URL, error) {
	if err := ops.CheckExposure([]string{cfg.Addr}, cfg.Keys.Len() > 0 || cfg.KeysFromBroker, cfg.InsecureNoAuth, "keys-file"); err != nil {
		return nil, err
	}
	if err := cfg.Editor.Validate(); err != nil {
		return nil, err
	}
	if cfg.CopilotAPIURL == "" {
		return nil, nil
	}
	return forward.ParseOverrideURL(cfg.CopilotAPIURL)
}

// newTokenSet is the broker client of the accounts the keys need.
func newTokenSet(cfg Config, broker brokerv1.TokenBrokerServiceClient, acc keyAccounts, tracker *pool.Tracker, profile *identity.Holder, reg prometheus.Registerer) (*brokerclient.Set, error) {
	return brokerclient.NewSet(brokerclient.SetConfig{
		Client: brokerclient.Config{
			Broker: broker, MinBackoff: cfg.MinBackoff, MaxBackoff: cfg.MaxBackoff,
			ServeCachedWhenRejected: cfg.ServeCachedWhenRejected, ValidateBaseURL: cfg.CopilotAPIURL == "", AllowedAPIHosts: cfg.AllowedAPIHosts,
			Registerer: reg, Clock: cfg.Clock, Logger: cfg.Logger.With("component", "broker-client"),
			Profile: profile,
		},
		Default: cfg.Account, NeedDefault: acc.needDefault, Named: acc.named, All: acc.all,
		OnQuota: tracker.SetQuota,
	})
}

// forwardConfig is f, the parts Start made, with the handler's settings
// taken from cfg.
func (cfg Config) forwardConfig(f forward.Config) forward.Config {
	f.DefaultAccount, f.Keys, f.Editor, f.Intents = cfg.Account, cfg.Keys, cfg.Editor, cfg.Intents
	f.AllowedAPIHosts, f.AnthropicBetas, f.ForwardHeaders = cfg.AllowedAPIHosts, cfg.AnthropicBetas, cfg.ForwardHeaders
	f.CountTokens, f.StreamIdleTimeout, f.Clock = cfg.CountTokens, cfg.StreamIdleTimeout, cfg.Clock
	f.MaxBodyBytes, f.BodyReadTimeout = cfg.MaxBodyBytes, cfg.BodyReadTimeout
	f.MaxInflightBodyBytes, f.InflightBodyWait = cfg.MaxInflightBodyBytes, cfg.InflightBodyWait
	f.MaxInflightBodyBytesPerKey = cfg.MaxInflightBodyBytesPerKey
	f.Logger = cfg.Logger.With("component", "forward")
	return f
}

// listen opens the client and admin listeners, each bounded to
// MaxConnections.
func listen(cfg Config, reg prometheus.Registerer) ([]net.Listener, error) {
	lns, err := ops.ListenAll(cfg.Addr, cfg.AdminAddr)
	if err != nil {
		return nil, err
	}
	conns := ops.NewConnLimits(reg, "copilot_proxy")
	lns[0], lns[1] = conns.Listener(lns[0], "proxy", cfg.MaxConnections), conns.Listener(lns[1], "admin", cfg.MaxConnections)
	return lns, nil
}

// upstreamTransport is cfg.Transport, or the shared transport cfg's
// upstream flags describe.
func upstreamTransport(cfg Config) (http.RoundTripper, error) {
	if cfg.Transport != nil {
		return cfg.Transport, nil
	}
	tc := forward.TransportConfig{ResponseHeaderTimeout: cfg.UpstreamHeaderTimeout, HTTP1Only: cfg.UpstreamHTTP1}
	var err error
	if tc.ConnectTo, err = forward.ParseConnectTo(cfg.ConnectTo); err != nil {
		return nil, err
	}
	if cfg.UpstreamCAFile != "" {
		if tc.RootCAs, err = ops.LoadCertPool(cfg.UpstreamCAFile); err != nil {
			return nil, fmt.Errorf("upstream CA: %w", err)
		}
	}
	return forward.NewTransport(tc), nil
}

// openAliases opens the model alias file, if one is configured.
func openAliases(cfg Config, metrics *forward.Metrics) (*catalog.AliasFile, error) {
	if cfg.ModelAliases == "" {
		return nil, nil
	}
	return catalog.OpenAliasFile(catalog.AliasFileConfig{
		Path: cfg.ModelAliases, Poll: cfg.ModelAliasesPoll, Metrics: metrics.Catalog(),
		Clock: cfg.Clock, Logger: cfg.Logger.With("component", "catalog"),
	})
}

// httpServers are the client and the admin listeners' servers. Without
// keys on loopback, the client's only answers loopback Host names: a
// DNS-rebinding web page could use the proxy otherwise.
func httpServers(cfg Config, handler, admin http.Handler) (proxySrv, adminSrv *http.Server) {
	errLog := slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug)
	if cfg.Keys.Len() == 0 && !cfg.KeysFromBroker && ops.IsLoopback(cfg.Addr) {
		handler = ops.LoopbackHostsOnly(handler, cfg.Addr)
	}
	proxySrv = ops.NewHTTPServer(ops.HTTPServerConfig{
		Handler:           handler,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		BodyReadTimeout:   cfg.BodyReadTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
		ErrorLog:          errLog,
	})
	if !cfg.NoClientH2C {
		// Prior-knowledge HTTP/2 on the plain listener: a client opening
		// with the HTTP/2 preface multiplexes its streams on one connection
		// (net/http's server: two goroutines a connection, one a stream).
		proxySrv.Protocols = new(http.Protocols)
		proxySrv.Protocols.SetHTTP1(true)
		proxySrv.Protocols.SetUnencryptedHTTP2(true)
		proxySrv.HTTP2 = &http.HTTP2Config{MaxConcurrentStreams: cfg.MaxStreamsPerConnection, MaxReceiveBufferPerStream: clientStreamWindow}
	}
	adminSrv = ops.NewHTTPServer(ops.HTTPServerConfig{
		Handler:           admin,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		BodyReadTimeout:   cfg.BodyReadTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		WriteTimeout:      adminWriteTimeout,
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
		ErrorLog:          errLog,
	})
	return proxySrv, adminSrv
}

// run serves until ctx ends or a listener fails, then shuts down in order:
// not ready, drain the proxy listener (streams get ShutdownGrace), stop the
// broker watch, then the admin listener. Every goroutine it starts has
// ended when it returns.
func (s *Server) run(ctx context.Context, proxySrv, adminSrv *http.Server, lns []net.Listener, transport http.RoundTripper, front *wsresponses.Front, closeConn func(), aliases *catalog.AliasFile) {
	defer close(s.done)
	defer closeConn()
	watchCtx, stopWatch := context.WithCancel(context.WithoutCancel(ctx))
	adminCtx, stopAdmin := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Go(func() { _ = s.tokens.Run(watchCtx) })
	if aliases != nil {
		wg.Go(func() { aliases.Run(watchCtx) })
	}
	reportCtx, stopReport := context.WithCancel(context.WithoutCancel(ctx))
	defer stopReport()
	if s.status != nil {
		wg.Go(func() { s.status.Run(watchCtx) })
	}
	if s.reporter != nil {
		wg.Go(func() { s.reporter.Run(reportCtx) })
		wg.Go(func() { s.gate.Run(watchCtx) })
	}
	var adminErr error
	wg.Go(func() {
		adminErr = ops.ServeHTTP(adminCtx, adminSrv, lns[1], s.cfg.ShutdownGrace)
		if adminErr != nil && adminCtx.Err() == nil {
			s.log.Error("admin listener failed; shutting down", "error", adminErr)
			s.cancel()
		}
	})

	// draining is set as soon as ctx ends, so /readyz fails at once while
	// ServeHTTP drains; stopping the notice keeps it from outliving run when
	// the proxy listener fails first.
	var drainStart atomic.Int64
	stopNotice := context.AfterFunc(ctx, func() {
		drainStart.Store(time.Now().UnixNano())
		s.draining.Store(true)
		s.log.Info("shutting down: not ready, draining in-flight requests", "grace", s.cfg.ShutdownGrace)
	})
	defer stopNotice()
	// WebSocket connections are hijacked, so the HTTP server's shutdown
	// does not wait for them: they drain alongside it, within the same
	// grace (a running response finishes, then close 1001).
	served := make(chan struct{})
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		select {
		case <-ctx.Done():
		case <-served:
		}
		graceCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownGrace)
		defer cancel()
		front.Drain(graceCtx)
	}()
	err := ops.ServeHTTP(ctx, proxySrv, lns[0], s.cfg.ShutdownGrace)
	close(served)
	<-drained
	if err != nil {
		s.log.Error("proxy listener failed; shutting down", "error", err)
	}
	s.draining.Store(true)
	s.flushUsage(drainStart.Load())
	stopReport()
	stopWatch()
	stopAdmin()
	wg.Wait()
	if t, ok := transport.(interface{ CloseIdleConnections() }); ok {
		t.CloseIdleConnections()
	}
	s.err = errors.Join(err, adminErr)
	s.log.Info("proxy stopped", "error", s.err)
}

// Addrs returns the bound listen addresses.
func (s *Server) Addrs() Addrs { return s.addrs }

// Registry returns the proxy's metrics registry.
func (s *Server) Registry() *prometheus.Registry { return s.registry }

// Ready returns nil while the proxy holds a valid token of at least one
// account it forwards for (its api_base_url accepted) and is not shutting
// down; /readyz reports it. One
// account without a token (a revoked seat) leaves the proxy ready: that
// account's keys get 503, its pools fail over.
func (s *Server) Ready() error {
	if s.draining.Load() {
		return ErrShuttingDown
	}
	return s.tokens.Ready()
}

// Token returns the token requests of keys without an account of their own
// are forwarded with now, or why there is none (tests and benchmarks watch
// rotations with it).
func (s *Server) Token() (*forward.Token, error) { return s.tokens.Source(s.cfg.Account).Token() }

// AccountToken returns the token of the named account, or why there is none.
func (s *Server) AccountToken(account string) (*forward.Token, error) {
	return s.tokens.Source(account).Token()
}

// WaitReady blocks until a valid token is held or ctx ends.
func (s *Server) WaitReady(ctx context.Context) error { return s.tokens.WaitReady(ctx) }

// Wait blocks until the proxy has stopped and returns its serving error.
func (s *Server) Wait() error {
	<-s.done
	return s.err
}

// Close begins the shutdown (as ctx ending would) and waits for it.
func (s *Server) Close() error {
	s.cancel()
	return s.Wait()
}

// upstreamWSClient is the client of upstream WebSocket upgrades
// (--upstream-websocket): net/http's transport, which can hand over the
// upgraded connection, with the upstream CA file's roots when set.
func upstreamWSClient(cfg Config) (*http.Client, error) {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSHandshakeTimeout = 10 * time.Second
	if cfg.UpstreamCAFile != "" {
		pool, err := ops.LoadCertPool(cfg.UpstreamCAFile)
		if err != nil {
			return nil, fmt.Errorf("upstream CA: %w", err)
		}
		t.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}
	}
	return &http.Client{Transport: t}, nil
}

func dialBroker(cfg Config) (brokerv1.TokenBrokerServiceClient, *grpc.ClientConn, error) {
	if cfg.Broker != nil {
		return cfg.Broker, nil, nil
	}
	tlsCfg, err := cfg.brokerTLS()
	if err != nil {
		return nil, nil, err
	}
	if tlsCfg == nil && !cfg.BrokerKey.IsZero() && !ops.IsLoopback(cfg.BrokerAddr) {
		cfg.Logger.Warn("the broker key is sent without TLS; use --broker-tls unless the network between proxy and broker is trusted",
			"broker", cfg.BrokerAddr)
	}
	conn, err := brokerclient.Dial(cfg.BrokerAddr, cfg.BrokerKey, tlsCfg)
	if err != nil {
		return nil, nil, err
	}
	return brokerv1.NewTokenBrokerServiceClient(conn), conn, nil
}

// newReporter returns the usage reporter, or nil when reporting is off or
// there is no broker connection to report on.
func newReporter(cfg Config, conn *grpc.ClientConn, reg prometheus.Registerer, gate *keybudget.Gate) (*usagereport.Reporter, error) {
	client := usageClient(cfg, conn)
	if cfg.UsageBuffer < 0 || client == nil {
		return nil, nil
	}
	return usagereport.New(usagereport.Config{
		Client: client, ProxyID: cfg.ProxyID, Buffer: cfg.UsageBuffer, Registerer: reg, OnDone: gate.Acked,
		Logger: cfg.Logger.With("component", "usage-report"),
	})
}

// usageClient is the broker's UsageService: the test's, or over conn.
func usageClient(cfg Config, conn *grpc.ClientConn) brokerv1.UsageServiceClient {
	if cfg.Usage == nil && conn != nil {
		return brokerv1.NewUsageServiceClient(conn)
	}
	return cfg.Usage
}

// flushUsage waits, for what is left of the shutdown grace (at least a
// few seconds), for the broker to acknowledge the usage events held.
func (s *Server) flushUsage(drainStartNanos int64) {
	if s.reporter == nil {
		return
	}
	left := s.cfg.ShutdownGrace
	if drainStartNanos != 0 {
		left -= time.Since(time.Unix(0, drainStartNanos))
	}
	ctx, cancel := context.WithTimeout(context.Background(), max(left, 3*time.Second))
	defer cancel()
	n := s.reporter.Buffered()
	if err := s.reporter.Flush(ctx); err != nil {
		s.log.Warn("shutting down with usage events the broker has not acknowledged", "unreported", s.reporter.Buffered(), "error", err)
		return
	}
	if n > 0 {
		s.log.Info("usage events flushed to the broker", "events", n)
	}
}

// newStatusReporter returns the reporter of the proxy's status to the
// broker (ProxyService), or nil when it is off or there is no broker
// connection to report on.
func newStatusReporter(cfg Config, conn *grpc.ClientConn, tracker *pool.Tracker, metrics *forward.Metrics, reg prometheus.Registerer) (*statusreport.Reporter, error) {
	client := cfg.Proxies
	if client == nil && conn != nil {
		client = brokerv1.NewProxyServiceClient(conn)
	}
	if cfg.StatusInterval < 0 || client == nil {
		return nil, nil
	}
	return statusreport.New(statusreport.Config{
		Client: client, ProxyID: cfg.ProxyID, Accounts: tracker.Statuses, Errors: metrics.UpstreamErrorClasses,
		Interval: cfg.StatusInterval, Registerer: reg, Clock: cfg.Clock, Logger: cfg.Logger.With("component", "status-report"),
	})
}
