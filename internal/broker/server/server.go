// Package server runs a whole broker in one process: the token manager for
// the default account, the gRPC server (TokenBrokerService, grpc.health.v1,
// reflection), the REST gateway, the admin endpoints, the GitHub token file
// watcher and the graceful shutdown. `broker serve` is a thin layer of flags
// over it, and tests of other packages start a broker with it:
//
//	srv, err := server.Start(ctx, server.Config{
//		GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0",
//		GitHubAPIURL: sandbox.URL, GitHubToken: sandbox.GitHubToken(),
//	})
//	if err != nil { ... }
//	defer srv.Close()
//	conn, err := grpc.NewClient(srv.Addrs().GRPC, ...)
//
// The server stops when ctx ends or [Server.Close] is called; [Server.Wait]
// returns once everything has stopped.
package server

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
	"github.com/copilot-broker/copilot-broker/internal/broker"
	"github.com/copilot-broker/copilot-broker/internal/broker/credfile"
	"github.com/copilot-broker/copilot-broker/internal/console"
	"github.com/copilot-broker/copilot-broker/internal/identity"
	"github.com/copilot-broker/copilot-broker/internal/keys"
	"github.com/copilot-broker/copilot-broker/internal/ops"
	"github.com/copilot-broker/copilot-broker/internal/secret"
	"github.com/copilot-broker/copilot-broker/internal/store"
	"github.com/copilot-broker/copilot-broker/internal/tokens"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
)

// Addrs are the bound listen addresses, useful when Config asked for port 0.
type Addrs struct {
	GRPC, HTTP, Admin string
}

// Server is a running broker.
type Server struct {
	cfg     Config
	log     *slog.Logger
	addrs   Addrs
	tls     bool
	fleet   *fleet
	dir     *credfile.DirWatcher
	svc     *broker.Service
	health  *broker.HealthServer
	grpc    *grpc.Server
	gwConn  *grpc.ClientConn
	watcher *credfile.Watcher
	store   store.Store          // nil without StateDir or DatabaseURL
	keySvc  *broker.KeyService   // nil without a store
	usage   *broker.UsageService // nil without a store
	budgets *broker.BudgetBook   // nil without a store
	// proxySvc takes the proxies' reports (ProxyService).
	proxySvc *broker.ProxyService
	// profileWatcher follows --upstream-profile; nil without one.
	profileWatcher *identity.Watcher

	heapFloor []byte // see newHeapFloor

	stopping atomic.Bool
	cancel   context.CancelFunc // ends the run context: starts the shutdown
	done     chan struct{}      // closed when everything has stopped
	err      error              // set before done closes
}

// Start validates cfg, binds the listeners and starts serving. It returns
// once the listeners are bound; the first token exchange runs in the
// background (GetToken waits for it). When it fails, everything it had
// built is released again (one cleanup path: [undo]). Its steps, in order:
// [Server.openStores], [Server.listen], [Server.startServices],
// [Server.startGateway] and [Server.serve].
func Start(ctx context.Context, cfg Config) (_ *Server, err error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if err := ops.CheckExposure([]string{cfg.GRPCAddr, cfg.HTTPAddr}, cfg.Keys.Len() > 0, cfg.InsecureNoAuth, "keys-file"); err != nil {
		return nil, err
	}
	tlsCfg, err := loadTLS(cfg)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: cfg.Logger, tls: tlsCfg != nil, done: make(chan struct{}), heapFloor: newHeapFloor()}
	b := &boot{tls: tlsCfg}
	defer func() {
		if err != nil {
			b.cleanup.run()
		}
	}()
	if err := s.openStores(ctx, b); err != nil {
		return nil, err
	}
	if err := s.listen(b); err != nil {
		return nil, err
	}
	if err := s.startServices(b); err != nil {
		return nil, err
	}
	if err := s.startGateway(ctx, b); err != nil {
		return nil, err
	}
	s.serve(ctx, b)

	s.log.Info("broker listening", "grpc", s.addrs.GRPC, "http", s.addrs.HTTP, "admin", s.addrs.Admin,
		"tls", s.tls, "mtls", cfg.TLSClientCAFile != "", "auth", b.auth.Enabled(), "keys", cfg.Keys.Len(),
		"github_api_url", cfg.GitHubAPIURL, "epoch", b.epoch, "accounts", len(s.svc.Accounts()), "accounts_dir", cfg.AccountsDir)
	return s, nil
}

// boot carries what one step of [Start] makes to the steps after it.
type boot struct {
	tls     *tls.Config // nil without TLS
	cleanup undo

	// openStores
	metrics   *broker.Metrics
	ghToken   secret.Secret
	dirTokens map[string]secret.Secret

	// listen
	grpcLn, httpLn, adminLn net.Listener

	// startServices
	profile *identity.Holder
	epoch   string
	auth    *broker.Authenticator

	// startGateway
	runCtx            context.Context
	gwLn              *memListener
	httpSrv, adminSrv *http.Server
}

// openStores reads the default account's credential and the accounts
// directory, and opens the state store when one is configured.
func (s *Server) openStores(ctx context.Context, b *boot) error {
	var err error
	if b.ghToken, err = s.openCredential(); err != nil {
		return err
	}
	if b.dirTokens, err = s.openAccountsDir(); err != nil {
		return err
	}
	b.metrics = broker.NewMetrics()
	return s.openStore(ctx, b.metrics, &b.cleanup)
}

// listen binds the gRPC, REST and admin listeners behind the connection
// limits, with TLS on the first two when configured.
func (s *Server) listen(b *boot) error {
	cfg := s.cfg
	lns, err := ops.ListenAll(cfg.GRPCAddr, cfg.HTTPAddr, cfg.AdminAddr)
	if err != nil {
		return err
	}
	b.cleanup.add(func() { ops.CloseAll(lns) })
	conns := ops.NewConnLimits(b.metrics.Registry(), "copilot_broker")
	b.grpcLn = conns.Listener(lns[0], "grpc", cfg.MaxConnections)
	b.httpLn = conns.Listener(lns[1], "http", cfg.MaxConnections)
	b.adminLn = conns.Listener(lns[2], "admin", cfg.MaxConnections)
	s.addrs = Addrs{GRPC: b.grpcLn.Addr().String(), HTTP: b.httpLn.Addr().String(), Admin: b.adminLn.Addr().String()}
	if b.tls != nil {
		b.grpcLn = tls.NewListener(b.grpcLn, withALPN(b.tls, "h2"))
		b.httpLn = tls.NewListener(b.httpLn, withALPN(b.tls, "h2", "http/1.1"))
	}
	return nil
}

// startServices builds the token service, the accounts fleet, the
// authenticator, the gRPC server and the usage ledger. Nothing serves yet.
func (s *Server) startServices(b *boot) error {
	cfg, metrics := s.cfg, b.metrics
	identityMetrics := broker.NewIdentityMetrics(metrics.Registry())
	profile, err := s.openProfile(identityMetrics)
	if err != nil {
		return err
	}
	b.profile = profile
	cfg.Exchange.Profile = profile
	b.epoch = newEpoch()
	proxies, err := newProxies(cfg, metrics, &s.svc)
	if err != nil {
		return err
	}
	s.svc, err = broker.NewService(broker.Config{
		MaxStreamAge: cfg.MaxStreamAge, MaxPendingWait: cfg.MaxPendingWait,
		Clock: cfg.Clock, Logger: cfg.Logger, Metrics: metrics,
		Profile: profile, IdentityMetrics: identityMetrics, Proxies: proxies,
	})
	if err != nil {
		return err
	}
	b.cleanup.add(s.svc.Close)
	s.health = newHealth(cfg)
	s.fleet = newFleet(cfg, s.svc, s.health, metrics, b.epoch)
	s.fleet.identity = identityMetrics
	b.cleanup.add(s.fleet.close)
	if err := s.startAccounts(b.ghToken, b.dirTokens); err != nil {
		return err
	}
	if err := metrics.ObserveService(s.svc); err != nil {
		return err
	}
	b.auth = broker.NewAuthenticator(cfg.Keys, cfg.Logger, metrics)
	s.health.AccountsNeedKey(b.auth)
	s.grpc = newGRPCServer(s.svc, s.keySvc, s.health, b.auth, metrics,
		broker.NewPublicStreamLimiter(b.auth, cfg.PublicStreams, metrics).StreamInterceptor(),
		broker.NewStreamLimiter(cfg.Streams, memAddr{}, metrics).StreamInterceptor())
	b.cleanup.add(s.grpc.Stop) // ends its stream workers, which start with it
	s.registerProxies(proxies)
	return s.openLedger(metrics)
}

// startGateway makes the run context, the REST gateway with the console
// beside it, and the REST and admin HTTP servers. Nothing serves yet.
func (s *Server) startGateway(ctx context.Context, b *boot) error {
	cfg := s.cfg
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = cancel
	b.runCtx = runCtx
	b.cleanup.add(cancel)
	gw, err := newGateway(runCtx, b.auth, b.metrics)
	if err != nil {
		return err
	}
	b.cleanup.add(func() { _ = gw.conn.Close() })
	s.gwConn, b.gwLn = gw.conn, gw.ln
	rest, err := withConsole(cfg, gw.handler, b.auth, b.metrics, b.tls != nil)
	if err != nil {
		return err
	}
	if cfg.Keys.Len() == 0 && ops.IsLoopback(cfg.HTTPAddr) {
		// Without keys, a DNS-rebinding web page could read the token.
		rest = ops.LoopbackHostsOnly(rest, cfg.HTTPAddr)
	}
	b.httpSrv, b.adminSrv = newHTTPServer(cfg, rest), newAdminServer(cfg, s.ready, b.metrics)
	return nil
}

// serve starts the servers and the background work, and the runner that
// shuts them down in order. It cannot fail.
func (s *Server) serve(ctx context.Context, b *boot) {
	cfg, runCtx := s.cfg, b.runCtx
	r := &runner{s: s, errc: make(chan error, 4)}
	r.goServe("grpc", func() error { return s.grpc.Serve(b.grpcLn) })
	r.goServe("gateway", func() error { return s.grpc.Serve(b.gwLn) })
	restCtx, stopREST := context.WithCancel(context.Background())
	adminCtx, stopAdmin := context.WithCancel(context.Background())
	r.goServe("rest", func() error { return ops.ServeHTTP(restCtx, b.httpSrv, b.httpLn, cfg.ShutdownTimeout) })
	r.goServe("admin", func() error { return ops.ServeHTTP(adminCtx, b.adminSrv, b.adminLn, cfg.ShutdownTimeout) })
	if s.watcher != nil {
		r.goBackground(func() { s.watcher.Run(runCtx) })
	}
	if s.dir != nil {
		r.goBackground(func() { s.dir.Run(runCtx) })
	}
	if s.store != nil {
		r.goBackground(func() { s.pruneUsage(runCtx) })
		r.goBackground(func() { s.budgets.Run(runCtx) })
	}
	if s.profileWatcher != nil {
		r.goBackground(func() { s.profileWatcher.Run(runCtx) })
		r.goBackground(func() { s.fleet.followProfile(runCtx, b.profile) })
	}
	go r.run(ctx, runCtx, stopREST, stopAdmin)
}

// openStore opens the state store, when one is configured, and the key
// service over it.
func (s *Server) openStore(ctx context.Context, metrics *broker.Metrics, cleanup *undo) error {
	if s.cfg.StateDir == "" && s.cfg.DatabaseURL == "" {
		return nil
	}
	st, err := store.Open(ctx, store.Config{StateDir: s.cfg.StateDir, DatabaseURL: s.cfg.DatabaseURL, Now: s.cfg.Clock.Now})
	if err != nil {
		return err
	}
	cleanup.add(func() { _ = st.Close() })
	ks, err := broker.NewKeyService(ctx, broker.KeyServiceConfig{
		Store: st, PollInterval: s.cfg.KeysPollInterval, MaxStreamAge: s.cfg.MaxStreamAge,
		Clock: s.cfg.Clock, Logger: s.cfg.Logger, Metrics: metrics,
	})
	if err != nil {
		return err
	}
	cleanup.add(ks.Close)
	s.store, s.keySvc = st, ks
	engine := "sqlite"
	if s.cfg.DatabaseURL != "" {
		engine = "postgres"
	}
	s.log.Info("state store open", "engine", engine, "state_dir", s.cfg.StateDir, "schema_version", store.SchemaVersion())
	return nil
}

// undo collects the releases of what Start has built so far; run releases
// them in reverse order when Start fails.
type undo []func()

func (u *undo) add(f func()) { *u = append(*u, f) }

func (u undo) run() {
	for i := len(u) - 1; i >= 0; i-- {
		u[i]()
	}
}

// openCredential returns the default account's GitHub token: from the
// token file, whose watcher it sets up (started later with the server), or
// from the Config.
func (s *Server) openCredential() (secret.Secret, error) {
	if s.cfg.GitHubTokenFile == "" {
		return s.cfg.GitHubToken, nil
	}
	w, tok, err := credfile.New(credfile.Config{
		Path: s.cfg.GitHubTokenFile, Interval: s.cfg.TokenFilePoll, Clock: s.cfg.Clock,
		Logger: s.cfg.Logger, OnChange: s.credentialChanged,
	})
	if err != nil {
		return secret.Secret{}, err
	}
	s.watcher = w
	return tok, nil
}

// openAccountsDir returns the tokens of the accounts directory, whose
// watcher it sets up (started later with the server); nil without one.
func (s *Server) openAccountsDir() (map[string]secret.Secret, error) {
	if s.cfg.AccountsDir == "" {
		return nil, nil
	}
	d, toks, err := credfile.NewDir(credfile.DirConfig{
		Dir: s.cfg.AccountsDir, ValidName: keys.ValidAccountName, Interval: s.cfg.TokenFilePoll, Clock: s.cfg.Clock,
		Logger: s.cfg.Logger, OnChange: func(e credfile.Event) { s.fleet.dirEvent(e) },
	})
	if err != nil {
		return nil, err
	}
	s.dir = d
	return toks, nil
}

// newHealth returns the grpc.health.v1 server: the process ("") SERVING
// until shutdown, the API's services NOT_SERVING until a token arrives.
func newHealth(cfg Config) *broker.HealthServer {
	h := broker.NewHealthServer(cfg.Clock)
	h.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	for _, svc := range broker.HealthServices {
		h.SetServingStatus(svc, healthpb.HealthCheckResponse_NOT_SERVING)
	}
	return h
}

// streamWorkers is the number of goroutines kept to run gRPC calls.
const streamWorkers = 64

// newGRPCServer returns the gRPC server with the API, health and
// reflection registered behind the metrics and auth interceptors. It starts
// nothing.
func newGRPCServer(svc *broker.Service, keySvc *broker.KeyService, health *broker.HealthServer, auth *broker.Authenticator, metrics *broker.Metrics, limits ...grpc.StreamServerInterceptor) *grpc.Server {
	g := grpc.NewServer(
		// The shared answers of the current token state go out in the wire
		// form made once per state.
		grpc.ForceServerCodecV2(svc.Codec()),
		// Reused goroutines run the calls: a new one per call grew its
		// stack on every call (runtime.copystack, 12% of a GetToken's CPU).
		// A worker busy with a stream is replaced by a new goroutine.
		grpc.NumStreamWorkers(streamWorkers),
		// A connection's HTTP/2 preface and settings must arrive in this
		// time, before any call or key is read (gRPC's default: 2 minutes).
		grpc.ConnectionTimeout(ops.DefaultReadHeaderTimeout),
		grpc.ChainUnaryInterceptor(metrics.UnaryInterceptor(), auth.UnaryInterceptor()),
		// limits bound the streams callers may hold, with a key or without.
		grpc.ChainStreamInterceptor(append([]grpc.StreamServerInterceptor{metrics.StreamInterceptor(), auth.StreamInterceptor()}, limits...)...),
		// Watchers idle for long stretches: let them keep the connection
		// alive, and find dead ones.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		// MaxConnectionAge (jittered by gRPC) makes clients reconnect now and
		// then, so proxies spread across broker replicas added later; ending
		// watch streams alone would keep each on its connection.
		grpc.KeepaliveParams(keepalive.ServerParameters{
			Time: time.Minute, Timeout: 20 * time.Second,
			MaxConnectionAge: time.Hour, MaxConnectionAgeGrace: 5 * time.Minute,
		}),
	)
	brokerv1.RegisterTokenBrokerServiceServer(g, svc)
	if keySvc != nil {
		brokerv1.RegisterKeyServiceServer(g, keySvc)
	}
	healthpb.RegisterHealthServer(g, health)
	reflection.Register(g)
	return g
}

// gateway is the REST side: its handler calls the gRPC server through conn,
// one client connection over the in-memory listener ln (the same server,
// interceptors and streaming, without TLS to itself). The gRPC server must
// serve ln.
type gateway struct {
	handler http.Handler
	conn    *grpc.ClientConn
	ln      *memListener
}

func newGateway(ctx context.Context, auth *broker.Authenticator, metrics *broker.Metrics) (*gateway, error) {
	ln := newMemListener()
	conn, err := grpc.NewClient("passthrough:///broker-gateway",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return ln.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("gateway connection: %w", err)
	}
	h, err := broker.NewRESTHandler(ctx, conn, auth, metrics)
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	return &gateway{handler: h, conn: conn, ln: ln}, nil
}

// withConsole serves the team console under /ui/ beside the REST API, which
// the console calls in process with the signed-in key.
func withConsole(cfg Config, api http.Handler, auth *broker.Authenticator, metrics *broker.Metrics, tls bool) (http.Handler, error) {
	ui, err := console.New(console.Config{
		API: api, AuthEnabled: auth.Enabled(), TLS: tls, ProxyURL: cfg.ConsoleProxyURL,
		Gatherer: metrics.Registry(), Registerer: metrics.Registry(), Clock: cfg.Clock, Logger: cfg.Logger,
	})
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle(console.Prefix, ui)
	mux.Handle("/", api)
	return mux, nil
}

// newHTTPServer serves the REST gateway.
func newHTTPServer(cfg Config, h http.Handler) *http.Server {
	// No WriteTimeout: /v1/token:watch streams for up to MaxStreamAge.
	return ops.NewHTTPServer(ops.HTTPServerConfig{Handler: h, ErrorLog: slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn)})
}

// newAdminServer serves /healthz, /readyz (ready) and /metrics.
func newAdminServer(cfg Config, ready func() error, metrics *broker.Metrics) *http.Server {
	return ops.NewHTTPServer(ops.HTTPServerConfig{
		Handler:      ops.AdminHandler(ready, metrics.Registry()),
		WriteTimeout: 30 * time.Second,
		ErrorLog:     slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
	})
}

// Addrs returns the bound listen addresses.
func (s *Server) Addrs() Addrs { return s.addrs }

// TLS reports whether the gRPC and REST listeners use TLS.
func (s *Server) TLS() bool { return s.tls }

// startAccounts starts the default account (when a default token is
// configured) and the accounts of the accounts directory.
func (s *Server) startAccounts(ghToken secret.Secret, dirTokens map[string]secret.Secret) error {
	if !ghToken.IsZero() || s.cfg.GitHubTokenFile != "" {
		if err := s.fleet.add("", ghToken); err != nil {
			return err
		}
	}
	for name, tok := range dirTokens {
		if err := s.fleet.add(name, tok); err != nil {
			return err
		}
	}
	return nil
}

// Snapshot returns the default account's token state (the zero State when
// there is no default account).
func (s *Server) Snapshot() tokens.State {
	if mgr, ok := s.fleet.manager(""); ok {
		return mgr.Snapshot()
	}
	return tokens.State{}
}

// AccountSnapshot returns an account's token state.
func (s *Server) AccountSnapshot(name string) (tokens.State, bool) {
	mgr, ok := s.fleet.manager(name)
	if !ok {
		return tokens.State{}, false
	}
	return mgr.Snapshot(), true
}

// Wait blocks until the server has stopped and returns the first error that
// stopped it (nil after a shutdown asked for by ctx or Close).
func (s *Server) Wait() error {
	<-s.done
	return s.err
}

// Close shuts the server down gracefully and waits for it, as when the
// context passed to [Start] ends.
func (s *Server) Close() error {
	s.cancel()
	return s.Wait()
}

// Reload re-reads the GitHub token file now (what SIGHUP does). When the
// token is REJECTED and the credential is unchanged, it presents the same
// credential again, so an operator who restored the account's Copilot
// access can retry without a restart.
func (s *Server) Reload() {
	if s.profileWatcher != nil {
		s.profileWatcher.Reload()
	}
	if s.dir != nil {
		s.dir.Reload()
	}
	if s.watcher != nil {
		s.watcher.Reload()
		return
	}
	if !s.cfg.GitHubToken.IsZero() {
		s.credentialChanged(s.cfg.GitHubToken, false)
	}
}

// credentialChanged hands a new credential to the manager. An unchanged one
// (a SIGHUP with the same file) retries it only while it stands rejected:
// the operator may have restored the account's Copilot access.
func (s *Server) credentialChanged(tok secret.Secret, changed bool) {
	s.fleet.setToken("", tok, changed)
}

// ready is /readyz: at least one account can hand out a token and no
// shutdown is under way.
func (s *Server) ready() error {
	if s.stopping.Load() {
		return errors.New("shutting down")
	}
	return s.fleet.ready()
}

func newEpoch() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// runner owns the serving goroutines and the shutdown order.
type runner struct {
	s          *Server
	errc       chan error
	serving    sync.WaitGroup
	background sync.WaitGroup
}

func (r *runner) goServe(name string, serve func() error) {
	r.serving.Add(1)
	go func() {
		defer r.serving.Done()
		if err := serve(); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			select {
			case r.errc <- fmt.Errorf("%s: %w", name, err):
			default:
			}
		}
	}()
}

func (r *runner) goBackground(f func()) {
	r.background.Add(1)
	go func() { defer r.background.Done(); f() }()
}

// run waits for the end of ctx or of a server, then shuts down in order:
// report NOT_SERVING (health Watch streams end once they have sent it), end
// the watch streams, drain REST, drain gRPC (then
// force it), stop the token manager and background work, and last the admin
// endpoints, so probes and scrapes see the shutdown until the end.
func (r *runner) run(ctx, runCtx context.Context, stopREST, stopAdmin context.CancelFunc) {
	s := r.s
	var cause error
	select {
	case <-ctx.Done():
	case <-runCtx.Done():
	case cause = <-r.errc:
		s.log.Error("server failed; shutting down", "error", cause)
	}
	start := time.Now()
	s.log.Info("shutting down")
	s.stopping.Store(true)
	s.health.Shutdown()
	s.svc.Drain()
	if s.keySvc != nil {
		s.keySvc.Drain()
	}
	if s.usage != nil {
		s.usage.Drain()
	}
	s.proxySvc.Drain()

	stopREST()
	s.stopGRPC()
	s.svc.Close()
	if s.keySvc != nil {
		s.keySvc.Close()
		_ = s.store.Close()
	}
	_ = s.gwConn.Close()
	s.fleet.close()
	s.cancel()
	r.background.Wait()
	stopAdmin()
	r.serving.Wait()
	if cause == nil {
		select {
		case err := <-r.errc:
			cause = err
		default:
		}
	}
	s.err = cause
	s.log.Info("stopped", "took", time.Since(start).Round(time.Millisecond))
	close(s.done)
}

// stopGRPC waits up to ShutdownTimeout for calls to finish, then cuts them.
func (s *Server) stopGRPC() {
	stopped := make(chan struct{})
	go func() { s.grpc.GracefulStop(); close(stopped) }()
	t := time.NewTimer(s.cfg.ShutdownTimeout)
	defer t.Stop()
	select {
	case <-stopped:
	case <-t.C:
		s.log.Warn("gRPC calls still running after the shutdown timeout; closing them")
		s.grpc.Stop()
		<-stopped
	}
}
