package sandbox

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"time"
)

// Reasons a Copilot token is refused; the API answers 401 for each.
var (
	errTokenMissing   = errors.New("missing bearer token")
	errTokenMalformed = errors.New("malformed token")
	errTokenSignature = errors.New("invalid token signature")
	errTokenExpired   = errors.New("token expired")
)

// rotateKey replaces the signing key, which invalidates every token issued so
// far while new ones verify.
func (s *Server) rotateKey() {
	k := make([]byte, 32)
	_, _ = rand.Read(k)
	s.key.Store(&k)
}

// InvalidateCopilotTokens makes every Copilot token issued so far fail with
// 401, as when GitHub revokes a session; tokens issued afterwards work.
func (s *Server) InvalidateCopilotTokens() {
	s.rotateKey()
	s.log.Info("sandbox: invalidated all issued copilot tokens")
}

// proxyEndpoint returns the proxy host GitHub puts in the token for sku.
func proxyEndpoint(sku string) string {
	switch {
	case strings.Contains(sku, "enterprise"):
		return "proxy.enterprise.githubcopilot.com"
	case strings.Contains(sku, "business"):
		return "proxy.business.githubcopilot.com"
	}
	return "proxy.individual.githubcopilot.com"
}

// mintToken returns a signed token in GitHub's `k=v;...:hexsig` format.
func (s *Server) mintToken(exp time.Time, ip string, acct *account) string {
	var b strings.Builder
	b.Grow(320)
	b.WriteString("tid=")
	b.WriteString(hexRandom(16))
	b.WriteString(";exp=")
	b.WriteString(strconv.FormatInt(exp.Unix(), 10))
	b.WriteString(";sku=")
	b.WriteString(acct.sku)
	b.WriteString(";proxy-ep=")
	b.WriteString(proxyEndpoint(acct.sku))
	b.WriteString(";st=dotcom;chat=1;cit=1;malfil=1;editor_preview_features=1;ccr=1;8kp=1;ip=")
	b.WriteString(ip)
	b.WriteString(";asn=AS0;rd=1;")
	b.WriteString(accountField)
	b.WriteString("=")
	b.WriteString(acct.name)
	fields := b.String()
	return fields + ":" + sign(*s.key.Load(), fields)
}

func sign(key []byte, fields string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(fields))
	return hex.EncodeToString(m.Sum(nil))
}

func hexRandom(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// verifyToken checks the signature and the exp field of tok against now.
func (s *Server) verifyToken(tok string, now time.Time) error {
	if tok == "" {
		return errTokenMissing
	}
	i := strings.LastIndexByte(tok, ':')
	if i < 0 {
		return errTokenMalformed
	}
	fields, sig := tok[:i], tok[i+1:]
	got, err := hex.DecodeString(sig)
	if err != nil || len(got) != sha256.Size {
		return errTokenMalformed
	}
	m := hmac.New(sha256.New, *s.key.Load())
	m.Write([]byte(fields))
	if !hmac.Equal(m.Sum(nil), got) {
		return errTokenSignature
	}
	exp, ok := tokenField(fields, "exp")
	if !ok {
		return errTokenMalformed
	}
	unix, err := strconv.ParseInt(exp, 10, 64)
	if err != nil {
		return errTokenMalformed
	}
	if now.Unix() >= unix {
		return errTokenExpired
	}
	return nil
}

// tokenField returns the value of key in the `k=v;k=v` part of a token.
func tokenField(fields, key string) (string, bool) {
	for fields != "" {
		var kv string
		kv, fields, _ = strings.Cut(fields, ";")
		if k, v, ok := strings.Cut(kv, "="); ok && k == key {
			return v, true
		}
	}
	return "", false
}
