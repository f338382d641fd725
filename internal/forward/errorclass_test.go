package forward

import (
	"testing"

	"github.com/copilot-broker/copilot-broker/internal/forward/upstreamerr"
	"github.com/google/go-cmp/cmp"
)

// TestUpstreamErrorClasses: the counts the status report sends the broker
// are the taxonomy counter's values, classes never seen left out.
func TestUpstreamErrorClasses(t *testing.T) {
	for _, tt := range []struct {
		name  string
		count []upstreamerr.Class
		want  map[string]uint64
	}{
		{"none", nil, map[string]uint64{}},
		{"one class", []upstreamerr.Class{upstreamerr.RateLimited}, map[string]uint64{"rate_limited": 1}},
		{"several", []upstreamerr.Class{upstreamerr.RateLimited, upstreamerr.Forbidden, upstreamerr.RateLimited},
			map[string]uint64{"rate_limited": 2, "forbidden": 1}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := &Metrics{classes: newClassMetrics(nil)}
			for _, c := range tt.count {
				m.classes.count(c)
			}
			if diff := cmp.Diff(tt.want, m.UpstreamErrorClasses()); diff != "" {
				t.Errorf("UpstreamErrorClasses() (-want +got):\n%s", diff)
			}
		})
	}
}
