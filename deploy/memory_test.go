package deploy

import (
	"fmt"
	"strconv"
	"strings"
	"testing"

	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// streamsHeadroom is the memory the proxy needs besides request bodies: the
// Go runtime and its long-lived streams (docs/benchmarks.md section 6
// measures under 64 KiB per stream; 320 MiB holds some 4,000 at once with
// room for the runtime).
const streamsHeadroom = 320 << 20

// TestProxyMemoryHoldsTheBodyBudget proves the proxy's container memory
// limit covers its in-flight body budget plus the headroom, that the budget
// covers one largest body, and that the autoscaler scales out on memory
// before the limit is reached.
func TestProxyMemoryHoldsTheBodyBudget(t *testing.T) {
	o := renderBase(t)
	d, err := o.deployment("copilot-proxy")
	if err != nil {
		t.Fatal(err)
	}
	c := d.Spec.Template.Spec.Containers[0]
	num := func(name string) int64 {
		v, err := strconv.ParseInt(env(c, name), 10, 64)
		if err != nil || v <= 0 {
			t.Fatalf("%s = %q; want a positive byte count", name, env(c, name))
		}
		return v
	}
	body, budget := num("PROXY_MAX_BODY_BYTES"), num("PROXY_MAX_INFLIGHT_BODY_BYTES")
	if budget < body {
		t.Errorf("PROXY_MAX_INFLIGHT_BODY_BYTES %d < PROXY_MAX_BODY_BYTES %d: the largest body could never be admitted", budget, body)
	}
	limit, ok := c.Resources.Limits[corev1.ResourceMemory]
	if !ok {
		t.Fatal("the proxy has no memory limit")
	}
	if need := budget + streamsHeadroom; limit.Value() < need {
		t.Errorf("memory limit %s < body budget %d + headroom %d", limit.String(), budget, int64(streamsHeadroom))
	}
	// The collector's soft limit: above the bodies (or it would collect
	// without end while they are held) and below the container's limit.
	soft, err := goMemLimit(env(c, "GOMEMLIMIT"))
	if err != nil {
		t.Fatalf("GOMEMLIMIT: %v", err)
	}
	if soft <= budget || soft >= limit.Value() {
		t.Errorf("GOMEMLIMIT %d bytes: want above the body budget %d and below the memory limit %s", soft, budget, limit.String())
	}
	request := c.Resources.Requests[corev1.ResourceMemory]
	var hpa *autoscalingv2.HorizontalPodAutoscaler
	for _, h := range o.hpas {
		if h.Spec.ScaleTargetRef.Name == d.Name {
			hpa = h
		}
	}
	if hpa == nil {
		t.Fatal("no autoscaler targets the proxy")
	}
	found := false
	for _, m := range hpa.Spec.Metrics {
		if m.Resource == nil || m.Resource.Name != corev1.ResourceMemory || m.Resource.Target.AverageUtilization == nil {
			continue
		}
		found = true
		at := resource.NewQuantity(request.Value()*int64(*m.Resource.Target.AverageUtilization)/100, resource.BinarySI)
		if at.Cmp(limit) >= 0 {
			t.Errorf("the autoscaler scales out at %s of memory, not below the limit %s", at, limit.String())
		}
	}
	if !found {
		t.Error("the proxy's autoscaler has no memory utilization target")
	}
}

// TestBrokerMemoryLimitHasSoftLimit: the broker sets GOMEMLIMIT below its
// container's memory limit, with room for what the runtime holds outside
// the heap (issue 22: the broker had no soft limit).
func TestBrokerMemoryLimitHasSoftLimit(t *testing.T) {
	o := renderBase(t)
	d, err := o.deployment("copilot-broker")
	if err != nil {
		t.Fatal(err)
	}
	c := d.Spec.Template.Spec.Containers[0]
	limit, ok := c.Resources.Limits[corev1.ResourceMemory]
	if !ok {
		t.Fatal("the broker has no memory limit")
	}
	soft, err := goMemLimit(env(c, "GOMEMLIMIT"))
	if err != nil {
		t.Fatalf("GOMEMLIMIT: %v", err)
	}
	// The limit is soft (the collector may overshoot it while it catches
	// up) and does not count what the kernel holds for sockets: leave a
	// fifth of the container for them.
	if soft > limit.Value()*4/5 {
		t.Errorf("GOMEMLIMIT %d bytes: want at most 80%% of the memory limit %s", soft, limit.String())
	}
}

// goMemLimit parses a GOMEMLIMIT value as the Go runtime does: a byte count
// with an optional B, KiB, MiB, GiB or TiB suffix.
func goMemLimit(v string) (int64, error) {
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}, {"B", 1}} {
		if strings.HasSuffix(v, u.suffix) {
			v, mult = strings.TrimSuffix(v, u.suffix), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%q is not a positive byte count", v)
	}
	return n * mult, nil
}
