package sandbox

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/copilot-broker/copilot-broker/internal/keys"
	"github.com/copilot-broker/copilot-broker/internal/secret"
)

// DefaultAccount is the name of the account of [Config.GitHubTokens] and of
// the tokens the device flow issues.
const DefaultAccount = "sandbox-user"

// accountField names the account in the fields of the Copilot tokens the
// sandbox issues, so the API knows whose quota and faults apply.
const accountField = "sb_acct"

// freeChatQuota is the chat allowance of a free plan.
const freeChatQuota = 50

// AccountConfig describes a GitHub account of the sandbox.
type AccountConfig struct {
	// Name is the account's login: 1-64 letters, digits, '-', '_' or '.'.
	Name string
	// GitHubToken is its GitHub token; zero generates one.
	GitHubToken secret.Secret
	// SKU is its plan (default [Config.SKU]).
	SKU string
	// PremiumEntitlement is its premium interactions per month. When set,
	// the Copilot API refuses premium calls (402) once they are used up,
	// unless OveragePermitted. Zero shows 300 (0 on a free plan) in
	// copilot_internal/user and refuses nothing, as the default account
	// does, so long load runs never spend it.
	PremiumEntitlement int64
	// OveragePermitted lets premium use go past the entitlement.
	OveragePermitted bool
}

// AccountInfo is an account as [Server.Accounts] reports it; the token is
// shown only by its fingerprint.
type AccountInfo struct {
	Name               string `json:"name"`
	SKU                string `json:"sku"`
	TokenFingerprint   string `json:"token_fingerprint"`
	Revoked            bool   `json:"revoked"`
	QuotaSpent         bool   `json:"quota_spent"`
	PremiumUsed        int64  `json:"premium_used"`
	PremiumEntitlement int64  `json:"premium_entitlement"`
	OveragePermitted   bool   `json:"overage_permitted"`
}

// account is one GitHub account: its plan, quota use and faults. Fields
// marked s.mu are guarded by the server's mutex.
type account struct {
	name    string
	sku     string
	premium int64 // entitlement
	enforce bool  // refuse premium calls past premium
	overage bool
	token   secret.Secret // the token it was created with

	revoked bool       // s.mu
	faults  faultState // s.mu

	apiFaulty   atomic.Bool // fast path: no API fault for this account
	spent       atomic.Bool // quota spent by [Server.SpendQuota]
	premiumUsed atomic.Int64
	usage       atomic.Pointer[usageState] // session and weekly limits; nil: none reported
}

// ghToken is an issued GitHub token.
type ghToken struct {
	acct     *account
	accepted bool // false: revoked
}

func newAccount(c AccountConfig) *account {
	a := &account{name: c.Name, sku: c.SKU, premium: c.PremiumEntitlement, enforce: c.PremiumEntitlement > 0,
		overage: c.OveragePermitted, token: c.GitHubToken}
	if a.sku == "" {
		a.sku = "monthly_subscriber"
	}
	if a.premium <= 0 && !isFreeSKU(a.sku) {
		a.premium = 300
	}
	return a
}

// ErrUnknownAccount is returned for an account the sandbox does not hold.
var ErrUnknownAccount = errors.New("sandbox: unknown account")

// AddAccount adds a GitHub account and returns its GitHub token.
func (s *Server) AddAccount(c AccountConfig) (secret.Secret, error) {
	if !keys.ValidAccountName(c.Name) {
		return secret.Secret{}, fmt.Errorf("sandbox: account name %q: want 1-%d letters, digits, '-', '_' or '.', not starting with '.'", c.Name, keys.MaxAccountNameLen)
	}
	if c.SKU == "" {
		c.SKU = s.cfg.SKU
	}
	if c.GitHubToken.IsZero() {
		c.GitHubToken = secret.New("gho_" + randomToken(36))
	}
	a := newAccount(c)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.accounts[c.Name]; ok {
		return secret.Secret{}, fmt.Errorf("sandbox: account %q exists", c.Name)
	}
	if _, ok := s.githubTokens[c.GitHubToken.Reveal()]; ok {
		return secret.Secret{}, errors.New("sandbox: that GitHub token belongs to another account")
	}
	s.accounts[c.Name] = a
	s.githubTokens[c.GitHubToken.Reveal()] = &ghToken{acct: a, accepted: true}
	s.log.Info("sandbox: account added", "account", c.Name, "sku", a.sku, "fingerprint", c.GitHubToken.Fingerprint())
	return c.GitHubToken, nil
}

// RemoveAccount deletes an account: its GitHub tokens and the Copilot tokens
// issued to it stop working (401).
func (s *Server) RemoveAccount(name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.accounts[name]
	if !ok || a == s.defaultAcct {
		return fmt.Errorf("%w %q (the default account cannot be removed)", ErrUnknownAccount, name)
	}
	delete(s.accounts, name)
	for t, g := range s.githubTokens {
		if g.acct == a {
			delete(s.githubTokens, t)
		}
	}
	return nil
}

// Accounts lists the accounts by name.
func (s *Server) Accounts() []AccountInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]AccountInfo, 0, len(s.accounts))
	for _, a := range s.accounts {
		fp := ""
		if !a.token.IsZero() {
			fp = a.token.Fingerprint()
		}
		out = append(out, AccountInfo{
			Name: a.name, SKU: a.sku, TokenFingerprint: fp, Revoked: a.revoked, QuotaSpent: a.spent.Load(),
			PremiumUsed: a.premiumUsed.Load(), PremiumEntitlement: a.premium, OveragePermitted: a.overage,
		})
	}
	slices.SortFunc(out, func(x, y AccountInfo) int { return strings.Compare(x.Name, y.Name) })
	return out
}

func (s *Server) accountNamed(name string) (*account, error) {
	a, ok := s.accounts[name]
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownAccount, name)
	}
	return a, nil
}

// RevokeAccount makes the exchange and copilot_internal/user answer 401 for
// every GitHub token of the account (as when its owner revokes the OAuth
// app); Copilot tokens already issued keep working until they expire, as on
// GitHub. [Server.RestoreAccount] undoes it.
func (s *Server) RevokeAccount(name string) error { return s.setRevoked(name, true) }

// RestoreAccount undoes [Server.RevokeAccount].
func (s *Server) RestoreAccount(name string) error { return s.setRevoked(name, false) }

func (s *Server) setRevoked(name string, revoked bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, err := s.accountNamed(name)
	if err != nil {
		return err
	}
	a.revoked = revoked
	s.log.Info("sandbox: account revocation", "account", name, "revoked", revoked)
	return nil
}

// SpendQuota marks the account's quota spent: the Copilot API answers 402 to
// every call with its tokens but /models, and copilot_internal/user shows
// nothing remaining, until [Server.ResetQuota].
func (s *Server) SpendQuota(name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, err := s.accountNamed(name)
	if err != nil {
		return err
	}
	a.spent.Store(true)
	return nil
}

// ResetQuota starts a new quota period for the account: nothing used,
// nothing spent.
func (s *Server) ResetQuota(name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, err := s.accountNamed(name)
	if err != nil {
		return err
	}
	a.spent.Store(false)
	a.premiumUsed.Store(0)
	return nil
}

// FailAccountExchanges answers the account's next n token exchanges with f
// (n <= 0: until [Server.ClearFaults]).
func (s *Server) FailAccountExchanges(name string, n int, f Fault) error {
	if err := f.validate(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	a, err := s.accountNamed(name)
	if err != nil {
		return err
	}
	a.faults.exchange = faultQueue{fault: f, remaining: n, untilCleared: n <= 0}
	return nil
}

// FailAccountAPI answers the next n Copilot API calls made with the
// account's tokens with f (n <= 0: until [Server.ClearFaults]); a 429 with
// a Retry-After rate-limits that account alone.
func (s *Server) FailAccountAPI(name string, n int, f Fault) error {
	if err := f.validate(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	a, err := s.accountNamed(name)
	if err != nil {
		return err
	}
	a.faults.api = faultQueue{fault: f, remaining: n, untilCleared: n <= 0}
	a.apiFaulty.Store(true)
	return nil
}

// AccountToken returns the GitHub token the account was created with.
func (s *Server) AccountToken(name string) (secret.Secret, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, err := s.accountNamed(name)
	if err != nil {
		return secret.Secret{}, err
	}
	if a == s.defaultAcct {
		return s.primary, nil
	}
	return a.token, nil
}

func (s *Server) takeAccountExchangeFault(a *account) (Fault, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return a.faults.exchange.take()
}

func (s *Server) takeAccountAPIFault(a *account) (Fault, bool) {
	if !a.apiFaulty.Load() {
		return Fault{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	f, ok := a.faults.api.take()
	if !a.faults.api.untilCleared && a.faults.api.remaining == 0 {
		a.apiFaulty.Store(false)
	}
	return f, ok
}

// tokenAccount returns the account named in a verified Copilot token; nil
// when that account was removed.
func (s *Server) tokenAccount(tok string) *account {
	fields := tok[:strings.LastIndexByte(tok, ':')]
	name, _ := tokenField(fields, accountField)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.accounts[name]
}

// quotaRefuses reports whether the account's quota refuses a call: every
// call once the quota is spent ([Server.SpendQuota]); a premium call once
// the premium entitlement is used up without overage.
func (a *account) quotaRefuses(premium bool, r *http.Request) bool {
	if a.spent.Load() {
		return !strings.HasPrefix(r.URL.Path, "/models")
	}
	return premium && a.enforce && !a.overage && a.premiumUsed.Load() >= a.premium
}

// writeQuotaExceeded answers 402 as the Copilot API does when the quota is
// spent.
func writeQuotaExceeded(w http.ResponseWriter, r *http.Request) {
	writeAPIError(w, r, http.StatusPaymentRequired, "insufficient_quota", "quota_exceeded",
		"You have exceeded your Copilot quota for this period. Your quota resets at the start of the next period.")
}
