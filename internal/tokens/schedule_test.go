package tokens

import (
	"errors"
	"testing"
	"time"
)

func defaultPolicy() schedulePolicy { return ManagerConfig{}.policy() }

func TestTokenSchedule(t *testing.T) {
	const s = time.Second
	received := t0
	tests := []struct {
		name      string
		refreshIn time.Duration
		expiresIn time.Duration // expires_at minus GitHub's Date
		skew      time.Duration // GitHub's clock minus ours
		noDate    bool          // answer without a Date header
		r         float64       // jitter draw
		// want, relative to received
		wantExpiry, wantRefresh time.Duration
		wantErr                 error
	}{
		{name: "typical", refreshIn: 1500 * s, expiresIn: 1800 * s, r: 0.5, wantExpiry: 1560 * s, wantRefresh: 1200 * s},
		{name: "GitHub an hour ahead", refreshIn: 1500 * s, expiresIn: 1800 * s, skew: time.Hour, r: 0.5, wantExpiry: 1560 * s, wantRefresh: 1200 * s},
		{name: "GitHub an hour behind", refreshIn: 1500 * s, expiresIn: 1800 * s, skew: -time.Hour, r: 0.5, wantExpiry: 1560 * s, wantRefresh: 1200 * s},
		{name: "no Date, GitHub an hour ahead", refreshIn: 1500 * s, expiresIn: 1800 * s, skew: time.Hour, noDate: true, r: 0.5, wantExpiry: 1560 * s, wantRefresh: 1200 * s},
		{name: "no Date, GitHub an hour behind", refreshIn: 1500 * s, expiresIn: 1800 * s, skew: -time.Hour, noDate: true, r: 0.5, wantExpiry: 1560 * s, wantRefresh: 1200 * s},
		{name: "jitter low end", refreshIn: 1500 * s, expiresIn: 1800 * s, r: 0, wantExpiry: 1560 * s, wantRefresh: 1080 * s},
		{name: "jitter high end", refreshIn: 1500 * s, expiresIn: 1800 * s, r: 1, wantExpiry: 1560 * s, wantRefresh: 1320 * s},
		{name: "expires_at sooner than refresh_in", refreshIn: 1500 * s, expiresIn: 600 * s, r: 0.5, wantExpiry: 598 * s, wantRefresh: 478400 * time.Millisecond},
		{name: "expires_at sooner, GitHub an hour ahead", refreshIn: 1500 * s, expiresIn: 600 * s, skew: time.Hour, r: 0.5, wantExpiry: 598 * s, wantRefresh: 478400 * time.Millisecond},
		{name: "expires_at sooner, GitHub an hour behind", refreshIn: 1500 * s, expiresIn: 600 * s, skew: -time.Hour, r: 0.5, wantExpiry: 598 * s, wantRefresh: 478400 * time.Millisecond},
		{name: "expires_at a little later than refresh_in", refreshIn: 1500 * s, expiresIn: 1530 * s, r: 0.5, wantExpiry: 1528 * s, wantRefresh: 1200 * s},
		{name: "refresh_in 0", refreshIn: 0, expiresIn: 1800 * s, r: 0.5, wantExpiry: 60 * s, wantRefresh: 10 * s},
		{name: "refresh_in 0, expires in 12s", refreshIn: 0, expiresIn: 12 * s, r: 0.5, wantExpiry: 10 * s, wantRefresh: 5 * s},
		{name: "refresh_in 30", refreshIn: 30 * s, expiresIn: 1800 * s, r: 0.5, wantExpiry: 90 * s, wantRefresh: 24 * s},
		{name: "refresh_in 30, jitter low", refreshIn: 30 * s, expiresIn: 1800 * s, r: 0, wantExpiry: 90 * s, wantRefresh: 21600 * time.Millisecond},
		{name: "refresh_in 60", refreshIn: 60 * s, expiresIn: 1800 * s, r: 0.5, wantExpiry: 120 * s, wantRefresh: 48 * s},
		{name: "refresh_in 60, GitHub an hour behind", refreshIn: 60 * s, expiresIn: 1800 * s, skew: -time.Hour, r: 0.5, wantExpiry: 120 * s, wantRefresh: 48 * s},
		{name: "refresh_in 10 floors at 10s", refreshIn: 10 * s, expiresIn: 1800 * s, r: 0, wantExpiry: 70 * s, wantRefresh: 10 * s},
		{name: "expired on arrival", refreshIn: 1500 * s, expiresIn: 0, r: 0.5, wantErr: errExpiredOnArrival},
		{name: "expires_at before Date", refreshIn: 1500 * s, expiresIn: -5 * s, skew: time.Hour, r: 0.5, wantErr: errExpiredOnArrival},
	}
	p := defaultPolicy()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			date := received.Add(tt.skew)
			tok := &CopilotToken{RefreshIn: tt.refreshIn, ExpiresAt: date.Add(tt.expiresIn), ServerDate: date}
			if tt.noDate {
				tok.ServerDate = time.Time{}
			}
			expiry, refreshAt, err := p.tokenSchedule(tok, received, tt.r)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("tokenSchedule() error = %v; want %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if got := expiry.Sub(received); got != tt.wantExpiry {
				t.Errorf("local expiry = received+%v; want received+%v", got, tt.wantExpiry)
			}
			if got := refreshAt.Sub(received); got != tt.wantRefresh {
				t.Errorf("refresh = received+%v; want received+%v", got, tt.wantRefresh)
			}
			if !refreshAt.Before(expiry) {
				t.Errorf("refresh %v not before expiry %v", refreshAt, expiry)
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	const s = time.Second
	tests := []struct {
		failures int
		r        float64
		want     time.Duration
	}{
		{1, 0.5, 1 * s},
		{2, 0.5, 2 * s},
		{3, 0.5, 4 * s},
		{7, 0.5, 64 * s},
		{8, 0.5, 120 * s}, // 128 s capped
		{50, 0.5, 120 * s},
		{1000, 0.5, 120 * s}, // no overflow
		{1, 0, 800 * time.Millisecond},
		{1, 1, 1200 * time.Millisecond},
		{8, 0, 96 * s},
		{8, 1, 144 * s},
	}
	p := defaultPolicy()
	for _, tt := range tests {
		if got := p.backoff(tt.failures, tt.r); got != tt.want {
			t.Errorf("backoff(%d, %v) = %v; want %v", tt.failures, tt.r, got, tt.want)
		}
	}
}
