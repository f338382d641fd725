package pool

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseSnapshot(t *testing.T) {
	rst := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		kind, value string
		want        Snapshot
		wantErr     bool
	}{
		{"chat", "ent=50&rem=12&rst=2026-12-01T00%3A00%3A00Z&ov=0&ovPerm=false",
			Snapshot{Kind: "chat", Entitlement: 50, Remaining: 12, Reset: rst}, false},
		{"premium_interactions", "ent=300&rem=0&rst=2026-12-01&ov=4.5&ovPerm=true",
			Snapshot{Kind: "premium_interactions", Entitlement: 300, OverageCount: 4.5, OveragePermitted: true, Reset: rst}, false},
		{"chat", "ent=-1&rem=100&rst=1796083200", Snapshot{Kind: "chat", Unlimited: true, Remaining: 100, Reset: rst}, false},
		{"chat", "ent=50&rem=1&rst=soon&extra=1", Snapshot{Kind: "chat", Entitlement: 50, Remaining: 1}, false},
		{"chat", "rem=1", Snapshot{}, true},
		{"chat", "ent=NaN&rem=1", Snapshot{}, true},
		{"chat", "ent=1&rem=Inf", Snapshot{}, true},
		{"chat", "ent=1&rem=1&ov=x", Snapshot{}, true},
		{"chat", "ent=1&rem=1;x", Snapshot{}, true},
		{"Bad Kind", "ent=1&rem=1", Snapshot{}, true},
		{"", "ent=1&rem=1", Snapshot{}, true},
		{"chat", "ent=1&rem=1&pad=" + strings.Repeat("x", maxHeaderValue), Snapshot{}, true},
	}
	for _, tt := range tests {
		got, err := ParseSnapshot(tt.kind, tt.value)
		if (err != nil) != tt.wantErr {
			t.Errorf("ParseSnapshot(%q, %q) error = %v; want error %v", tt.kind, tt.value, err, tt.wantErr)
			continue
		}
		if d := cmp.Diff(tt.want, got); d != "" {
			t.Errorf("ParseSnapshot(%q, %q) (-want +got):\n%s", tt.kind, tt.value, d)
		}
	}
}

func TestExhausted(t *testing.T) {
	tests := []struct {
		s    Snapshot
		want bool
	}{
		{Snapshot{Entitlement: 50, Remaining: 0}, true},
		{Snapshot{Entitlement: 50, Remaining: -2}, true},
		{Snapshot{Entitlement: 50, Remaining: 1}, false},
		{Snapshot{Entitlement: 50, Remaining: 0, OveragePermitted: true}, false},
		{Snapshot{Unlimited: true}, false},
		{Snapshot{Entitlement: 0, Remaining: 0}, false},
	}
	for _, tt := range tests {
		if got := tt.s.Exhausted(); got != tt.want {
			t.Errorf("%+v.Exhausted() = %v; want %v", tt.s, got, tt.want)
		}
	}
}

func TestFromHeaders(t *testing.T) {
	h := http.Header{}
	h.Set("X-Quota-Snapshot-Chat", "ent=50&rem=3")
	h.Set("x-quota-snapshot-premium_interactions", "ent=300&rem=0")
	h.Set("X-Quota-Snapshot-Broken", "nonsense")
	h.Set("X-Quota-Snapshot-", "ent=1&rem=1")
	h.Set("Content-Type", "application/json")
	got := map[string]Snapshot{}
	for _, s := range FromHeaders(h) {
		got[s.Kind] = s
	}
	want := map[string]Snapshot{
		"chat":                 {Kind: "chat", Entitlement: 50, Remaining: 3},
		"premium_interactions": {Kind: "premium_interactions", Entitlement: 300},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("FromHeaders (-want +got):\n%s", d)
	}
	for i := range 20 {
		h.Set("X-Quota-Snapshot-K"+strings.Repeat("x", i), "ent=1&rem=1")
	}
	if n := len(FromHeaders(h)); n > maxKinds {
		t.Errorf("FromHeaders returned %d snapshots; want at most %d", n, maxKinds)
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		v    string
		want time.Duration
	}{
		{"", 0},
		{"7", 7 * time.Second},
		{" 3 ", 3 * time.Second},
		{"0", 0},
		{"-5", 0},
		{"99999999999999", MaxCool},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0},
		{"soon", 0},
	}
	for _, tt := range tests {
		if got := ParseRetryAfter(tt.v, now); got != tt.want {
			t.Errorf("ParseRetryAfter(%q) = %v; want %v", tt.v, got, tt.want)
		}
	}
}

func FuzzParseSnapshot(f *testing.F) {
	f.Add("chat", "ent=50&rem=12&rst=2026-12-01T00%3A00%3A00Z&ov=0&ovPerm=false")
	f.Add("premium_interactions", "ent=-1&rem=100&rst=1796083200&ovPerm=true")
	f.Add("x", "ent=1e308&rem=-1e308&ov=%zz")
	f.Fuzz(func(t *testing.T, kind, value string) {
		s, err := ParseSnapshot(kind, value)
		if err != nil {
			return
		}
		if s.Kind != kind || s.Unlimited && s.Exhausted() || s.Entitlement < 0 {
			t.Fatalf("ParseSnapshot(%q, %q) = %+v: inconsistent", kind, value, s)
		}
	})
}

// FuzzParseQuota checks the map-free reader against url.ParseQuery.
func FuzzParseQuota(f *testing.F) {
	for _, v := range []string{"ent=50&rem=12&rst=2026-12-01T00%3A00%3A00Z&ov=0&ovPerm=false", "ent=1&ent=2&rem", "a;b&ent=1",
		"ent=%zz&rem=1", "%65nt=3&rem=+1", "&&ent=&rem=4&", "ovPerm=true&ovPerm=false"} {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, v string) {
		got, err := parseQuota(v)
		want, werr := url.ParseQuery(v)
		if (err != nil) != (werr != nil) {
			t.Fatalf("parseQuota(%q) error %v; url.ParseQuery %v", v, err, werr)
		}
		if g := (quotaFields{want.Get("ent"), want.Get("rem"), want.Get("ov"), want.Get("ovPerm"), want.Get("rst")}); got != g {
			t.Fatalf("parseQuota(%q) = %+v; url.ParseQuery gives %+v", v, got, g)
		}
	})
}

func FuzzParseRetryAfter(f *testing.F) {
	f.Add("7")
	f.Add("Wed, 21 Oct 2026 07:28:00 GMT")
	f.Fuzz(func(t *testing.T, v string) {
		d := ParseRetryAfter(v, time.Unix(1_800_000_000, 0))
		if d < 0 || d > MaxCool {
			t.Fatalf("ParseRetryAfter(%q) = %v; want within [0, %v]", v, d, MaxCool)
		}
	})
}

// TestQuotaReaderMatchesFromHeaders checks that the remembering reader
// returns what FromHeaders does, on first sight and on repeats, that
// malformed values stay refused, and that its memory stays bounded.
func TestQuotaReaderMatchesFromHeaders(t *testing.T) {
	var q QuotaReader
	hs := []http.Header{
		{"X-Quota-Snapshot-Chat": {"ent=-1&rem=100&rst=2026-12-01T00%3A00%3A00Z"}, "Content-Type": {"application/json"}},
		{"X-Quota-Snapshot-Premium_interactions": {"ent=300&rem=12.5&rst=2026-12-01T00%3A00%3A00Z&ov=0&ovPerm=false"}},
		{"X-Quota-Snapshot-Premium_interactions": {"ent=300&rem=11.5&rst=2026-12-01T00%3A00%3A00Z&ov=0&ovPerm=false"}},
		{"X-Quota-Snapshot-Chat": {"ent=%zz&rem=1"}},
		{"x-quota-snapshot-Bad Kind": {"ent=1&rem=1"}},
		// Two kinds with one value (the API's premium pair), then that
		// value under a kind that is refused.
		{"X-Quota-Snapshot-Premium_models": {"ent=300&rem=10&ovPerm=true"}, "X-Quota-Snapshot-Premium_interactions": {"ent=300&rem=10&ovPerm=true"}},
		{"X-Quota-Snapshot-Bad!": {"ent=300&rem=10&ovPerm=true"}},
	}
	for round := range 3 {
		for i, h := range hs {
			got, want := q.Read("alice", h), FromHeaders(h)
			byKind := func(a, b Snapshot) int { return strings.Compare(a.Kind, b.Kind) }
			slices.SortFunc(got, byKind)
			slices.SortFunc(want, byKind)
			if !slices.Equal(got, want) {
				t.Errorf("round %d, headers %d: Read = %+v; FromHeaders = %+v", round, i, got, want)
			}
		}
	}
	// Values that change, on ever new accounts and reset times: still
	// right, and the memory stays bounded.
	for i := range 3 * maxRemembered {
		h := http.Header{"X-Quota-Snapshot-Chat": {fmt.Sprintf("ent=%d&rem=1&rst=%d", i, 1_800_000_000+i)}}
		got := q.Read(fmt.Sprint("acct", i%300), h)
		if len(got) != 1 || got[0].Entitlement != float64(i) || got[0].Reset.Unix() != int64(1_800_000_000+i) {
			t.Fatalf("Read(ent=%d) = %+v", i, got)
		}
	}
	q.mu.Lock()
	n, v, r := len(q.last), len(q.byValue), len(q.resets)
	q.mu.Unlock()
	if n > maxRemembered || v > maxRemembered || r > maxRemembered {
		t.Errorf("the reader holds %d snapshots, %d values and %d reset times; want at most %d each", n, v, r, maxRemembered)
	}
}

// TestQuotaReaderRepeatAllocs checks that an answer whose snapshot headers
// were seen before costs one allocation (the slice returned): no kind
// lower-cased, no value parsed again.
func TestQuotaReaderRepeatAllocs(t *testing.T) {
	var q QuotaReader
	h := http.Header{
		"X-Quota-Snapshot-Chat":                 {"ent=-1&ov=0&ovPerm=false&rem=-1&rst=2027-01-01T00%3A00%3A00Z"},
		"X-Quota-Snapshot-Premium_models":       {"ent=300&ov=0&ovPerm=true&rem=300&rst=2027-01-01T00%3A00%3A00Z"},
		"X-Quota-Snapshot-Premium_interactions": {"ent=300&ov=0&ovPerm=true&rem=300&rst=2027-01-01T00%3A00%3A00Z"},
	}
	q.Read("alice", h)
	if n := testing.AllocsPerRun(100, func() { q.Read("alice", h) }); n > 1 {
		t.Errorf("Read of headers seen before: %v allocations; want 1", n)
	}
}
