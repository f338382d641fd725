package broker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
	"github.com/copilot-broker/copilot-broker/internal/clock"
	"github.com/copilot-broker/copilot-broker/internal/keys"
	"github.com/copilot-broker/copilot-broker/internal/store"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// DefaultKeysPollInterval is how often a broker reads the store's keys
// version to notice changes made by another broker sharing the database.
const DefaultKeysPollInterval = 250 * time.Millisecond

// MaxKeyNameLen is the longest managed key name.
const MaxKeyNameLen = 64

// KeyServiceConfig configures a [KeyService]. Zero values take defaults.
type KeyServiceConfig struct {
	// Store holds the keys (required).
	Store store.Store
	// PollInterval is how often the store's keys version is read (default
	// [DefaultKeysPollInterval]); changes made through this service reach
	// its watchers before the change's RPC answers.
	PollInterval time.Duration
	// MaxStreamAge and StreamAgeJitter bound WatchKeys streams as
	// [Config] does WatchToken streams.
	MaxStreamAge    time.Duration
	StreamAgeJitter float64
	// Clock times polls and stream ages and is "now" for expiry checks (nil
	// means the real clock).
	Clock clock.Clock
	// Rand returns uniform numbers in [0, 1) for jitter (nil: math/rand/v2).
	Rand func() float64
	// Random is the source of secrets (nil: crypto/rand).
	Random io.Reader
	// Logger receives key changes, named by the admin key that made them
	// (nil discards).
	Logger *slog.Logger
	// Metrics counts WatchKeys streams (nil counts nothing).
	Metrics *Metrics
}

// KeyService implements brokerv1.KeyServiceServer over a [store.Store]:
// admin keys manage client keys, any broker key watches them. It follows the
// store's keys version (see keywatch.go) so that every broker sharing a
// database streams the same set. Safe for concurrent use.
type KeyService struct {
	brokerv1.UnimplementedKeyServiceServer

	store   store.Store
	poll    time.Duration
	maxAge  time.Duration
	jitter  float64
	rand    func() float64
	clock   clock.Clock
	random  io.Reader
	log     *slog.Logger
	metrics *Metrics

	snap      snapshotHolder
	reloadMu  sync.Mutex    // one reload at a time
	kick      chan struct{} // a change was made here and not yet read back
	stop      context.CancelFunc
	done      chan struct{}
	draining  chan struct{}
	drainOnce sync.Once
}

// NewKeyService reads the key set once and starts following the store. Call
// [KeyService.Close] when done.
func NewKeyService(ctx context.Context, cfg KeyServiceConfig) (*KeyService, error) {
	if cfg.Store == nil {
		return nil, errors.New("broker: key service without a store")
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = DefaultKeysPollInterval
	}
	if cfg.Random == nil {
		cfg.Random = rand.Reader
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &KeyService{
		store: cfg.Store, poll: cfg.PollInterval, clock: clock.OrReal(cfg.Clock),
		random: cfg.Random, log: cfg.Logger, metrics: cfg.Metrics,
		kick: make(chan struct{}, 1), done: make(chan struct{}), draining: make(chan struct{}),
	}
	s.maxAge, s.jitter, s.rand = streamAgeDefaults(cfg.MaxStreamAge, cfg.StreamAgeJitter, cfg.Rand)
	if err := s.reload(ctx); err != nil {
		return nil, err
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.stop = cancel
	go s.follow(runCtx)
	return s, nil
}

// Close stops following the store (it does not close the store).
func (s *KeyService) Close() {
	s.stop()
	<-s.done
}

// Drain ends every WatchKeys stream, open or yet to come, with OK.
func (s *KeyService) Drain() { s.drainOnce.Do(func() { close(s.draining) }) }

// mayManage refuses callers whose broker key is not an admin key. With
// authentication off (no broker keys: loopback only) everyone may.
func mayManage(ctx context.Context) error {
	k, ok := ctx.Value(keyCtxKey{}).(*keys.Key)
	if !ok || k.Admin {
		return nil
	}
	return status.Errorf(codes.PermissionDenied, "broker key %q may not manage keys: only a key marked admin (NAME:SECRET:ACCOUNTS:admin in the broker's keys file) may", k.Name)
}

// storeError turns a store error into a status.
func storeError(err error) error {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, store.ErrExists):
		return status.Error(codes.AlreadyExists, err.Error())
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	}
	return status.Errorf(codes.Unavailable, "key store: %v", err)
}

func invalid(format string, args ...any) error {
	return status.Errorf(codes.InvalidArgument, format, args...)
}

func checkKeyName(name string) error {
	if !keys.ValidName(name) || len(name) > MaxKeyNameLen {
		return invalid("key name %q: want 1-%d letters, digits, '-', '_' or '.'", name, MaxKeyNameLen)
	}
	return nil
}

func checkAccounts(field string) error {
	if field == "" {
		return nil
	}
	if _, err := keys.ParseAccounts(field); err != nil {
		return invalid("accounts: %v", err)
	}
	return nil
}

func checkModels(globs []string) error {
	if _, err := keys.ModelList(globs...); err != nil {
		return invalid("models: %v", err)
	}
	return nil
}

func (s *KeyService) checkExpiry(ts *timestamppb.Timestamp) (time.Time, error) {
	if ts == nil {
		return time.Time{}, nil
	}
	if err := ts.CheckValid(); err != nil {
		return time.Time{}, invalid("expires_at: %v", err)
	}
	t := ts.AsTime()
	if !t.After(s.clock.Now()) {
		return time.Time{}, invalid("expires_at %s is not in the future", t.Format(time.RFC3339))
	}
	return t, nil
}

// CreateKey stores a new key and returns its secret once.
func (s *KeyService) CreateKey(ctx context.Context, req *brokerv1.CreateKeyRequest) (*brokerv1.CreateKeyResponse, error) {
	if err := mayManage(ctx); err != nil {
		return nil, err
	}
	if err := checkKeyName(req.GetName()); err != nil {
		return nil, err
	}
	if err := checkAccounts(req.GetAccounts()); err != nil {
		return nil, err
	}
	if err := checkModels(req.GetModels()); err != nil {
		return nil, err
	}
	expires, err := s.checkExpiry(req.GetExpiresAt())
	if err != nil {
		return nil, err
	}
	sec, imported := req.GetSecret(), req.GetSecret() != ""
	if imported {
		if err := keys.CheckSecret(sec); err != nil {
			return nil, invalid("secret: %v", err)
		}
	} else {
		gen, err := keys.Generate(s.random)
		if err != nil {
			return nil, status.Errorf(codes.Internal, "making a secret: %v", err)
		}
		sec = gen.Reveal()
	}
	k := store.Key{
		Name: req.GetName(), Digest: store.DigestOf(sec), Accounts: req.GetAccounts(), Models: req.GetModels(),
		ExpiresAt: expires, State: store.StateActive, CreatedBy: KeyName(ctx),
	}
	if err := s.store.CreateKey(ctx, k); err != nil {
		return nil, storeError(err)
	}
	stored, err := s.store.Key(ctx, k.Name)
	if err != nil {
		return nil, storeError(err)
	}
	s.changed(ctx)
	s.log.Info("key created", "key", k.Name, "by", KeyName(ctx), "accounts", k.Accounts, "models", strings.Join(k.Models, ","),
		"expires_at", expires, "imported", imported)
	resp := &brokerv1.CreateKeyResponse{Key: keyProto(stored)}
	if !imported {
		resp.Secret = sec // an imported secret is the caller's already: never echo it
	}
	return resp, nil
}

// ListKeys lists every key.
func (s *KeyService) ListKeys(ctx context.Context, _ *brokerv1.ListKeysRequest) (*brokerv1.ListKeysResponse, error) {
	if err := mayManage(ctx); err != nil {
		return nil, err
	}
	all, err := s.store.Keys(ctx)
	if err != nil {
		return nil, storeError(err)
	}
	resp := &brokerv1.ListKeysResponse{Keys: make([]*brokerv1.Key, len(all))}
	for i, k := range all {
		resp.Keys[i] = keyProto(k)
	}
	return resp, nil
}

// errRevoked aborts an update of a revoked key.
var errRevoked = errors.New("key is revoked")

// UpdateKey changes the fields the request sets.
func (s *KeyService) UpdateKey(ctx context.Context, req *brokerv1.UpdateKeyRequest) (*brokerv1.UpdateKeyResponse, error) {
	if err := mayManage(ctx); err != nil {
		return nil, err
	}
	if err := checkKeyName(req.GetName()); err != nil {
		return nil, err
	}
	if req.Accounts != nil {
		if err := checkAccounts(req.GetAccounts()); err != nil {
			return nil, err
		}
	}
	if req.Models != nil {
		if err := checkModels(req.GetModels().GetGlobs()); err != nil {
			return nil, err
		}
	}
	if req.ExpiresAt != nil && req.GetClearExpiresAt() {
		return nil, invalid("expires_at and clear_expires_at together")
	}
	expires, err := s.checkExpiry(req.GetExpiresAt())
	if err != nil {
		return nil, err
	}
	var changes []string
	k, err := s.store.UpdateKey(ctx, req.GetName(), func(k *store.Key) error {
		if k.State == store.StateRevoked {
			return errRevoked
		}
		changes = changes[:0]
		if req.Accounts != nil {
			k.Accounts = req.GetAccounts()
			changes = append(changes, "accounts="+k.Accounts)
		}
		if req.Models != nil {
			k.Models = req.GetModels().GetGlobs()
			changes = append(changes, "models="+strings.Join(k.Models, ","))
		}
		if req.ExpiresAt != nil {
			k.ExpiresAt = expires
			changes = append(changes, "expires_at="+expires.Format(time.RFC3339))
		}
		if req.GetClearExpiresAt() {
			k.ExpiresAt = time.Time{}
			changes = append(changes, "expires_at=never")
		}
		if req.Disabled != nil {
			k.State = store.StateActive
			if req.GetDisabled() {
				k.State = store.StateDisabled
			}
			changes = append(changes, "state="+string(k.State))
		}
		return nil
	})
	if errors.Is(err, errRevoked) {
		return nil, status.Errorf(codes.FailedPrecondition, "key %q is revoked: create a new key instead", req.GetName())
	}
	if err != nil {
		return nil, storeError(err)
	}
	s.changed(ctx)
	s.log.Info("key updated", "key", k.Name, "by", KeyName(ctx), "changes", strings.Join(changes, " "))
	return &brokerv1.UpdateKeyResponse{Key: keyProto(k)}, nil
}

// errUnchanged aborts an update that would change nothing.
var errUnchanged = errors.New("unchanged")

// RevokeKey revokes a key for good.
func (s *KeyService) RevokeKey(ctx context.Context, req *brokerv1.RevokeKeyRequest) (*brokerv1.RevokeKeyResponse, error) {
	if err := mayManage(ctx); err != nil {
		return nil, err
	}
	if err := checkKeyName(req.GetName()); err != nil {
		return nil, err
	}
	k, err := s.store.UpdateKey(ctx, req.GetName(), func(k *store.Key) error {
		if k.State == store.StateRevoked {
			return errUnchanged
		}
		k.State = store.StateRevoked
		return nil
	})
	if errors.Is(err, errUnchanged) {
		if k, err = s.store.Key(ctx, req.GetName()); err != nil {
			return nil, storeError(err)
		}
		return &brokerv1.RevokeKeyResponse{Key: keyProto(k)}, nil
	}
	if err != nil {
		return nil, storeError(err)
	}
	s.changed(ctx)
	s.log.Info("key revoked", "key", k.Name, "by", KeyName(ctx))
	return &brokerv1.RevokeKeyResponse{Key: keyProto(k)}, nil
}

var stateProto = map[store.State]brokerv1.KeyState{
	store.StateActive:   brokerv1.KeyState_KEY_STATE_ACTIVE,
	store.StateDisabled: brokerv1.KeyState_KEY_STATE_DISABLED,
	store.StateRevoked:  brokerv1.KeyState_KEY_STATE_REVOKED,
}

func timeProto(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

// keyProto is a key's API form: its digest, never a secret.
func keyProto(k store.Key) *brokerv1.Key {
	return &brokerv1.Key{
		Name: k.Name, Digest: hex.EncodeToString(k.Digest[:]), Accounts: k.Accounts, Models: k.Models,
		ExpiresAt: timeProto(k.ExpiresAt), State: stateProto[k.State], CreatedAt: timeProto(k.CreatedAt),
		UpdatedAt: timeProto(k.UpdatedAt), LastUsedAt: timeProto(k.LastUsedAt), CreatedBy: k.CreatedBy,
	}
}
