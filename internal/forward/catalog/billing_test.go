package catalog

import "testing"

func TestPremiumUnits(t *testing.T) {
	tests := []struct {
		m    *Model
		want float64
	}{
		{nil, 1},
		{&Model{}, 1},
		{&Model{Billing: &Billing{IsPremium: false, Multiplier: 0}}, 0},
		{&Model{Billing: &Billing{IsPremium: true, Multiplier: 0.33}}, 0.33},
		{&Model{Billing: &Billing{IsPremium: true, Multiplier: 10}}, 10},
		{&Model{Billing: &Billing{IsPremium: true, Multiplier: -2}}, 0},
	}
	for _, tt := range tests {
		if got := tt.m.PremiumUnits(); got != tt.want {
			t.Errorf("PremiumUnits(%+v) = %v; want %v", tt.m, got, tt.want)
		}
	}
}
