// Package secret holds credentials (GitHub tokens, Copilot tokens, API keys) in
// a type that never prints, logs or serializes its value by accident.
package secret

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"log/slog"
)

// Redacted is what a [Secret] prints as.
const Redacted = "[REDACTED]"

// Secret is a credential. Its zero value is the empty secret. Every way of
// formatting it (fmt verbs, slog, JSON, text marshaling) yields [Redacted];
// the value is read only through [Secret.Reveal].
type Secret struct {
	value string
}

// New wraps s.
func New(s string) Secret { return Secret{value: s} }

// Reveal returns the value. Call it only where the credential is sent to the
// party it is meant for.
func (s Secret) Reveal() string { return s.value }

// IsZero reports whether the secret is empty.
func (s Secret) IsZero() bool { return s.value == "" }

// Equal compares two secrets in constant time (for equal lengths).
func (s Secret) Equal(o Secret) bool {
	return subtle.ConstantTimeCompare([]byte(s.value), []byte(o.value)) == 1
}

// Fingerprint returns a short, non-reversible identifier of the value (the
// first 8 hex digits of its SHA-256), safe to log so that two tokens can be
// told apart. It returns "" for the empty secret.
func (s Secret) Fingerprint() string {
	if s.value == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(s.value))
	return hex.EncodeToString(sum[:4])
}

// String returns [Redacted].
func (s Secret) String() string { return Redacted }

// GoString returns [Redacted], so %#v does not show the value either.
func (s Secret) GoString() string { return Redacted }

// Format writes [Redacted] for every verb.
func (s Secret) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(Redacted)) }

// LogValue makes slog log [Redacted].
func (s Secret) LogValue() slog.Value { return slog.StringValue(Redacted) }

// MarshalText returns [Redacted], covering JSON and other encoders.
func (s Secret) MarshalText() ([]byte, error) { return []byte(Redacted), nil }
