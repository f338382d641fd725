package brokerclient

import (
	"testing"

	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
	"github.com/copilot-broker/copilot-broker/internal/identity"
)

func TestClientTakesTheBrokersProfile(t *testing.T) {
	h := identity.NewHolder(identity.DefaultProfile(), "")
	c, err := New(Config{Broker: brokerv1.NewTokenBrokerServiceClient(nil), Profile: h})
	if err != nil {
		t.Fatal(err)
	}
	p := identity.DefaultProfile()
	p.PluginVersion = "copilot-chat/0.70.0"
	msg := func(gen uint64, m *brokerv1.UpstreamProfile) *brokerv1.Token {
		return &brokerv1.Token{Epoch: "e", Generation: gen, Status: brokerv1.TokenStatus_TOKEN_STATUS_PENDING, Profile: m}
	}
	good := &brokerv1.UpstreamProfile{EditorVersion: p.Version, EditorPluginVersion: p.PluginVersion, UserAgent: p.UserAgent,
		IntegrationId: p.IntegrationID, ExchangeApiVersion: p.ExchangeAPIVersion, ApiVersion: p.APIVersion, Revision: p.Revision(), Source: "/p.yaml"}
	changed := h.Changed()
	c.apply(msg(1, good), "test")
	select {
	case <-changed:
	default:
		t.Fatal("the broker's profile did not reach the holder")
	}
	if got := h.Get(); got.Profile.PluginVersion != "copilot-chat/0.70.0" || got.Revision != p.Revision() || got.Source != "/p.yaml" {
		t.Fatalf("held %+v", got)
	}
	bad := &brokerv1.UpstreamProfile{EditorVersion: "nonsense", Revision: "x"}
	c.apply(msg(2, bad), "test")
	if got := h.Get(); got.Profile.PluginVersion != "copilot-chat/0.70.0" {
		t.Fatalf("an invalid profile replaced the held one: %+v", got)
	}
	c.apply(msg(3, nil), "test") // a broker that predates profiles
	if got := h.Get(); got.Revision != p.Revision() {
		t.Fatalf("a message without a profile changed it: %+v", got)
	}
}
