package server

import (
	"context"
	"fmt"
	"strings"
	"time"

	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
	"github.com/copilot-broker/copilot-broker/internal/forward"
	"github.com/copilot-broker/copilot-broker/internal/forward/brokerclient"
	"github.com/copilot-broker/copilot-broker/internal/forward/clientkeys"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
)

// defaultKeysStartWait bounds the wait for the first managed key set.
const defaultKeysStartWait = 10 * time.Second

// startKeys starts following the broker's key set when cfg asks for it, and
// waits (bounded) for the first set, so that a name in both the keys file
// and the broker is refused at start. It returns the handler's key set (nil:
// the handler uses cfg.Keys) and the function that stops the watch.
func startKeys(ctx context.Context, cfg Config, conn *grpc.ClientConn, reg prometheus.Registerer) (forward.KeySet, func(), error) {
	if !cfg.KeysFromBroker {
		return nil, func() {}, nil
	}
	kb := cfg.KeyBroker
	if kb == nil {
		kb = brokerv1.NewKeyServiceClient(conn)
	}
	set := clientkeys.New(clientkeys.Config{File: cfg.Keys, MaxStale: cfg.KeysMaxStale, Clock: cfg.Clock, Logger: cfg.Logger.With("component", "keys")})
	w, err := brokerclient.NewKeyWatcher(brokerclient.KeyWatcherConfig{
		Broker: kb, Keys: set, MinBackoff: cfg.MinBackoff, Registerer: reg, Clock: cfg.Clock,
		Logger: cfg.Logger.With("component", "broker-keys"),
	})
	if err != nil {
		return nil, nil, err
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() { defer close(done); w.Run(runCtx) }()
	stop := func() { cancel(); <-done }

	wait := cfg.KeysStartWait
	if wait <= 0 {
		wait = defaultKeysStartWait
	}
	wctx, wcancel := context.WithTimeout(ctx, wait)
	defer wcancel()
	if err := set.Wait(wctx); err != nil {
		cfg.Logger.Warn("no key set from the broker yet; starting anyway: managed keys get 503 until it arrives", "waited", wait)
		return set, stop, nil
	}
	if clash := set.Clashes(); len(clash) > 0 {
		stop()
		return nil, nil, fmt.Errorf("key names both in --keys-file and managed at the broker: %s; rename or remove one of each (broker keys revoke NAME, or edit the file)", strings.Join(clash, ", "))
	}
	cfg.Logger.Info("key set received from the broker", "managed_keys", set.Len(), "file_keys", cfg.Keys.Len())
	return set, stop, nil
}
