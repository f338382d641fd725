package broker

import (
	"context"
	"testing"
	"time"

	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
	"github.com/copilot-broker/copilot-broker/internal/identity"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestProfilePushedWithTheToken: every Token carries the held profile, and
// a new profile reaches an open WatchToken stream at once.
func TestProfilePushedWithTheToken(t *testing.T) {
	h := identity.NewHolder(identity.DefaultProfile(), "")
	src := newFake(validState(1))
	svc := newTestService(t, src, func(c *Config) { c.Profile = h })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	msgs, done := watch(ctx, svc)
	if m := <-msgs; m.GetProfile().GetEditorVersion() != identity.DefaultEditorVersion || m.GetProfile().GetRevision() == "" {
		t.Fatalf("first message profile = %v; want the default", m.GetProfile())
	}
	p := identity.DefaultProfile()
	p.Version = "vscode/1.150.0"
	p.Headers = map[string]string{"X-A": "b"}
	h.Set(p, "/etc/profile.yaml")
	m := <-msgs
	if m.GetGeneration() != 1 || m.GetProfile().GetEditorVersion() != "vscode/1.150.0" || m.GetProfile().GetHeaders()["X-A"] != "b" ||
		m.GetProfile().GetSource() != "/etc/profile.yaml" || m.GetProfile().GetRevision() != p.Revision() {
		t.Fatalf("after the change: %v", m)
	}
	got, err := svc.GetToken(ctx, &brokerv1.GetTokenRequest{})
	if err != nil || got.GetToken().GetProfile().GetEditorVersion() != "vscode/1.150.0" {
		t.Fatalf("GetToken = %v, %v", got, err)
	}
	cancel()
	<-done
}

// TestIdentityRejectedStatus: a proxy's report marks the account
// IDENTITY_REJECTED, with the file to edit, until the profile changes; no
// token is exchanged for it.
func TestIdentityRejectedStatus(t *testing.T) {
	h := identity.NewHolder(identity.DefaultProfile(), "/etc/profile.yaml")
	src := newFake(validState(1))
	reg := prometheus.NewRegistry()
	im := NewIdentityMetrics(reg)
	svc := newTestService(t, src, func(c *Config) { c.Profile, c.IdentityMetrics = h, im })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	msgs, done := watchAccounts(ctx, svc)
	defer func() { cancel(); <-done }()
	if a := (<-msgs)[0]; a.GetAccountStatus() != brokerv1.AccountStatus_ACCOUNT_STATUS_OK {
		t.Fatalf("first view: %v", a)
	}
	if _, err := svc.RefreshToken(ctx, &brokerv1.RefreshTokenRequest{RejectedGeneration: 1,
		Reason: brokerv1.RefreshReason_REFRESH_REASON_IDENTITY_REJECTED, Detail: "HTTP 466: client not supported"}); err != nil {
		t.Fatal(err)
	}
	a := (<-msgs)[0]
	r := a.GetIdentityRejection()
	if a.GetAccountStatus() != brokerv1.AccountStatus_ACCOUNT_STATUS_IDENTITY_REJECTED || r.GetOrigin() != "api" ||
		r.GetProfileSource() != "/etc/profile.yaml" || r.GetDetail() != "HTTP 466: client not supported" || r.GetCount() != 1 {
		t.Fatalf("after the report: %v", a)
	}
	if len(src.forced) != 0 {
		t.Errorf("a refused identity forced a refresh: %v", src.forced)
	}
	if n := testutil.ToFloat64(im.rejectedTotal.WithLabelValues("", "api")); n != 1 {
		t.Errorf("copilot_broker_identity_rejected_total = %v; want 1", n)
	}
	p := identity.DefaultProfile()
	p.PluginVersion = "copilot-chat/0.70.0"
	h.Set(p, "/etc/profile.yaml")
	deadline := time.After(10 * time.Second)
	for {
		select {
		case as := <-msgs:
			if as[0].GetAccountStatus() == brokerv1.AccountStatus_ACCOUNT_STATUS_OK {
				return
			}
		case <-deadline:
			t.Fatal("the account stayed IDENTITY_REJECTED after the profile changed")
		}
	}
}
