package broker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Bounds of a proxy's report.
const (
	maxProxyField       = 200 // id, version, account names
	maxReportAccounts   = 256
	maxLimitsPerAccount = 8
	maxReportErrorKinds = 32
	maxKindLen          = 40
	maxProxyClockAhead  = time.Hour // how far ahead of the broker a proxy's times may be
)

// ProxyService is the ProxyService of the contract over [Proxies].
type ProxyService struct {
	brokerv1.UnimplementedProxyServiceServer
	proxies  *Proxies
	interval *durationpb.Duration // nil: the proxies choose
	drain    chan struct{}
	drainMu  sync.Once
}

// NewProxyService returns the service over p; interval, when positive, is
// the report interval the broker asks of proxies.
func NewProxyService(p *Proxies, interval time.Duration) *ProxyService {
	s := &ProxyService{proxies: p, drain: make(chan struct{})}
	if interval > 0 {
		s.interval = durationpb.New(interval)
	}
	return s
}

// Drain ends every ReportStatus stream (the proxies report again, to this
// broker's successor); the server's graceful stop would otherwise wait for
// them.
func (s *ProxyService) Drain() { s.drainMu.Do(func() { close(s.drain) }) }

// ReportStatus takes one proxy's reports until it goes away.
func (s *ProxyService) ReportStatus(stream brokerv1.ProxyService_ReportStatusServer) error {
	ctx := stream.Context()
	if k := callerKey(ctx); k != nil && k.Admin {
		return status.Errorf(codes.PermissionDenied, "ReportStatus takes reports from proxies' broker keys; %q is an admin key", k.Name)
	}
	address := ""
	if pr, ok := peer.FromContext(ctx); ok && pr.Addr != nil {
		address = pr.Addr.String()
	}
	in := newInbox(ctx, s.drain, stream.Recv)
	var info *brokerv1.ProxyInfo
	for {
		req, ok, err := in.next()
		if !ok {
			return err
		}
		now := s.proxies.clock.Now()
		if err := checkReport(info, req, now); err != nil {
			s.proxies.Counted("invalid")
			return status.Error(codes.InvalidArgument, err.Error())
		}
		if info == nil {
			info = req.GetProxy()
			release, err := s.proxies.Connect(info, address)
			if err != nil {
				s.proxies.Counted("refused")
				return status.Error(codes.ResourceExhausted, err.Error())
			}
			defer release()
		}
		if st := req.GetStatus(); st != nil {
			if err := s.proxies.Report(info, address, st); err != nil {
				s.proxies.Counted("refused")
				return status.Error(codes.ResourceExhausted, err.Error())
			}
		}
		s.proxies.Counted("ok")
		if err := stream.Send(&brokerv1.ReportStatusResponse{ReportInterval: s.interval}); err != nil {
			return err
		}
	}
}

// ListProxies lists the proxies; admin keys only.
func (s *ProxyService) ListProxies(ctx context.Context, _ *brokerv1.ListProxiesRequest) (*brokerv1.ListProxiesResponse, error) {
	if k := callerKey(ctx); k != nil && !k.Admin {
		return nil, status.Errorf(codes.PermissionDenied, "ListProxies needs an admin broker key; %q is not one", k.Name)
	}
	return &brokerv1.ListProxiesResponse{Proxies: s.proxies.List()}, nil
}

// checkReport says what is wrong with a report message; first is the
// stream's ProxyInfo so far (nil before the first message).
func checkReport(first *brokerv1.ProxyInfo, req *brokerv1.ReportStatusRequest, now time.Time) error {
	switch {
	case first == nil && req.GetProxy() == nil:
		return errors.New("the first message of a report stream must say who the proxy is (proxy)")
	case first != nil && req.GetProxy() != nil && !proto.Equal(first, req.GetProxy()):
		return errors.New("proxy changed within a report stream; open a new stream")
	case first == nil:
		if err := checkProxyInfo(req.GetProxy(), now); err != nil {
			return fmt.Errorf("proxy: %w", err)
		}
	}
	if st := req.GetStatus(); st != nil {
		if err := checkProxyStatus(st, now); err != nil {
			return fmt.Errorf("status: %w", err)
		}
	}
	return nil
}

func checkProxyInfo(info *brokerv1.ProxyInfo, now time.Time) error {
	switch {
	case !validProxyName(info.GetId(), maxProxyField):
		return fmt.Errorf("id %q: want 1 to %d letters, digits or . _ - : @", truncate(info.GetId()), maxProxyField)
	case !validProxyName(info.GetInstance(), 64):
		return fmt.Errorf("instance %q: want 1 to 64 letters, digits or . _ - : @", truncate(info.GetInstance()))
	case len(info.GetVersion()) > maxProxyField || !printable(info.GetVersion()):
		return fmt.Errorf("version: want at most %d printable characters", maxProxyField)
	}
	return checkTime("started_at", info.GetStartedAt(), true, now)
}

func checkProxyStatus(st *brokerv1.ProxyStatus, now time.Time) error {
	if err := checkTime("at", st.GetAt(), false, now); err != nil {
		return err
	}
	if n := len(st.GetAccounts()); n > maxReportAccounts {
		return fmt.Errorf("%d accounts; at most %d", n, maxReportAccounts)
	}
	seenAccounts := map[string]bool{}
	for _, a := range st.GetAccounts() {
		name := a.GetAccount()
		if len(name) > maxProxyField || name != "" && !validProxyName(name, maxProxyField) {
			return fmt.Errorf("account %q is not an account name", truncate(name))
		}
		if seenAccounts[name] {
			return fmt.Errorf("account %q twice", name)
		}
		seenAccounts[name] = true
		if err := checkLimits(a.GetLimits(), now); err != nil {
			return fmt.Errorf("account %q: %w", name, err)
		}
	}
	if n := len(st.GetUpstreamErrors()); n > maxReportErrorKinds {
		return fmt.Errorf("upstream_errors: %d classes; at most %d", n, maxReportErrorKinds)
	}
	for kind := range st.GetUpstreamErrors() {
		if !validKind(kind) {
			return fmt.Errorf("upstream_errors: class %q: want 1 to %d of a-z, 0-9, _", truncate(kind), maxKindLen)
		}
	}
	return nil
}

func checkLimits(limits []*brokerv1.UsageLimit, now time.Time) error {
	if n := len(limits); n > maxLimitsPerAccount {
		return fmt.Errorf("%d usage limits; at most %d", n, maxLimitsPerAccount)
	}
	kinds := map[string]bool{}
	for _, l := range limits {
		switch k := l.GetKind(); {
		case !validKind(k):
			return fmt.Errorf("usage limit kind %q: want 1 to %d of a-z, 0-9, _", truncate(k), maxKindLen)
		case kinds[k]:
			return fmt.Errorf("usage limit %q twice", k)
		case !finite(l.GetPercentRemaining()) || l.GetPercentRemaining() < 0 || l.GetPercentRemaining() > 100:
			return fmt.Errorf("usage limit %q: percent_remaining %v not within 0 to 100", k, l.GetPercentRemaining())
		case !finite(l.GetEntitlement()) || !finite(l.GetRemaining()) || l.GetEntitlement() < 0:
			return fmt.Errorf("usage limit %q: entitlement and remaining must be numbers, entitlement not negative", k)
		}
		kinds[l.GetKind()] = true
		if err := checkTime("reset_at", l.GetResetAt(), false, time.Time{}); err != nil {
			return fmt.Errorf("usage limit %q: %w", l.GetKind(), err)
		}
		if err := checkTime("seen_at", l.GetSeenAt(), false, now); err != nil {
			return fmt.Errorf("usage limit %q: %w", l.GetKind(), err)
		}
	}
	return nil
}

// checkTime checks a timestamp: present when required, valid, and not
// more than maxProxyClockAhead after now (unless now is zero).
func checkTime(name string, ts *timestamppb.Timestamp, required bool, now time.Time) error {
	switch {
	case ts == nil && required:
		return fmt.Errorf("%s missing", name)
	case ts == nil:
		return nil
	case !ts.IsValid():
		return fmt.Errorf("%s is not a valid time", name)
	case !now.IsZero() && ts.AsTime().After(now.Add(maxProxyClockAhead)):
		return fmt.Errorf("%s %s is in the future", name, ts.AsTime().UTC().Format(time.RFC3339))
	}
	return nil
}

func validProxyName(s string, maxLen int) bool {
	if s == "" || len(s) > maxLen {
		return false
	}
	for _, r := range s {
		ok := r == '-' || r == '_' || r == '.' || r == ':' || r == '@' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9')
		if !ok {
			return false
		}
	}
	return true
}

func validKind(s string) bool {
	if s == "" || len(s) > maxKindLen {
		return false
	}
	for _, r := range s {
		if r != '_' && (r < 'a' || r > 'z') && (r < '0' || r > '9') {
			return false
		}
	}
	return true
}

func printable(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}
