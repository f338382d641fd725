package brokerclient

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"time"

	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
	"github.com/copilot-broker/copilot-broker/internal/clock"
	"github.com/copilot-broker/copilot-broker/internal/forward"
	"github.com/copilot-broker/copilot-broker/internal/forward/clientkeys"
	"github.com/copilot-broker/copilot-broker/internal/keys"
	"github.com/prometheus/client_golang/prometheus"
)

// KeyWatcherConfig configures a [KeyWatcher].
type KeyWatcherConfig struct {
	// Broker is the broker's key API. Required.
	Broker brokerv1.KeyServiceClient
	// Keys receives every key set, and learns when the watch breaks.
	// Required.
	Keys *clientkeys.Set
	// MinBackoff and MaxBackoff bound the reconnection delay (defaults
	// 250 ms and 5 s: key changes should not wait long after the broker
	// returns).
	MinBackoff, MaxBackoff time.Duration
	// Registerer receives the watcher's metrics (nil: none).
	Registerer prometheus.Registerer
	// Clock times reconnections (nil: real).
	Clock clock.Clock
	// Logger receives connection events (nil: discard).
	Logger *slog.Logger
}

// KeyWatcher follows the broker's WatchKeys stream into a [clientkeys.Set]:
// the whole set arrives at once and again on every change. It reconnects
// at once after a stream that delivered (the broker ends streams on age)
// and with jittered exponential backoff otherwise.
type KeyWatcher struct {
	cfg     KeyWatcherConfig
	backoff *Client // for its backoff arithmetic and clock
	log     *slog.Logger
	keys    prometheus.Gauge
	updates prometheus.Counter
	refused prometheus.Counter
}

// NewKeyWatcher returns a KeyWatcher; [KeyWatcher.Run] starts it.
func NewKeyWatcher(cfg KeyWatcherConfig) (*KeyWatcher, error) {
	if cfg.Broker == nil || cfg.Keys == nil {
		return nil, errors.New("brokerclient: key watcher needs a broker and a key set")
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 250 * time.Millisecond
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 5 * time.Second
	}
	b, err := New(Config{Broker: brokerv1.NewTokenBrokerServiceClient(nil), MinBackoff: cfg.MinBackoff, MaxBackoff: cfg.MaxBackoff, Clock: cfg.Clock})
	if err != nil {
		return nil, err
	}
	w := &KeyWatcher{cfg: cfg, backoff: b, log: cfg.Logger,
		keys: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "copilot_proxy_managed_keys", Help: "Client keys managed at the broker that this proxy holds.",
		}),
		updates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "copilot_proxy_managed_key_updates_total", Help: "Key sets received from the broker (WatchKeys).",
		}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "copilot_proxy_managed_key_refused_total", Help: "Keys of received sets left out because they could not be read.",
		}),
	}
	if w.log == nil {
		w.log = slog.New(slog.DiscardHandler)
	}
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{w.keys, w.updates, w.refused} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("brokerclient: key watcher metrics: %w", err)
			}
		}
	}
	return w, nil
}

// Run follows WatchKeys until ctx ends. While the stream is down the key
// set keeps the last keys (see [clientkeys.Set.Disconnected]).
func (w *KeyWatcher) Run(ctx context.Context) {
	w.backoff.follow(ctx, w.log, watchLoop{what: "WatchKeys (keeping the last key set)", watch: w.watch, ended: func(error) bool {
		w.cfg.Keys.Disconnected()
		return false
	}})
}

func (w *KeyWatcher) watch(ctx context.Context) (got bool, err error) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := w.cfg.Broker.WatchKeys(sctx, &brokerv1.WatchKeysRequest{})
	if err != nil {
		return false, err
	}
	return receive(stream, func(resp *brokerv1.WatchKeysResponse, first bool) {
		if first {
			w.log.Info("watching the broker's key set", "keys", len(resp.GetKeys()), "version", resp.GetVersion())
		}
		w.apply(resp)
	})
}

// apply converts the broker's set and hands it to the key set.
func (w *KeyWatcher) apply(resp *brokerv1.WatchKeysResponse) {
	out := make([]clientkeys.Managed, 0, len(resp.GetKeys()))
	for _, k := range resp.GetKeys() {
		m, err := managed(k)
		if err != nil {
			w.refused.Inc()
			w.log.Error("a key from the broker cannot be read; it is refused", "key", k.GetName(), "error", err)
			continue
		}
		out = append(out, m)
	}
	w.cfg.Keys.Update(out)
	w.keys.Set(float64(len(out)))
	w.updates.Inc()
	w.log.Debug("key set received", "keys", len(out), "version", resp.GetVersion())
}

func managed(k *brokerv1.Key) (clientkeys.Managed, error) {
	m := clientkeys.Managed{Name: k.GetName(), Disabled: k.GetState() != brokerv1.KeyState_KEY_STATE_ACTIVE}
	d, err := hex.DecodeString(k.GetDigest())
	if err != nil || len(d) != len(m.Digest) {
		return m, errors.New("bad digest")
	}
	copy(m.Digest[:], d)
	if a := k.GetAccounts(); a != "" {
		acc, err := keys.ParseAccounts(a)
		if err != nil {
			return m, fmt.Errorf("accounts: %w", err)
		}
		t := forward.Target{All: acc.All(), Accounts: acc.Names()}
		m.Target = &t
	}
	if m.Models, err = keys.ModelList(k.GetModels()...); err != nil {
		return m, fmt.Errorf("models: %w", err)
	}
	if k.GetExpiresAt() != nil {
		m.ExpiresAt = k.GetExpiresAt().AsTime()
	}
	return m, nil
}
