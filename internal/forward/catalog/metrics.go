package catalog

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the catalog's Prometheus series. A nil *Metrics records
// nothing.
type Metrics struct {
	refreshes   *prometheus.CounterVec
	models      *prometheus.GaugeVec
	resolutions [RuleUnknown + 1]prometheus.Counter
	aliases     prometheus.Gauge
	badLines    prometheus.Gauge
	reloads     *prometheus.CounterVec
	ageDesc     *prometheus.Desc

	mu     sync.Mutex
	stores map[*Store]struct{}
}

// NewMetrics registers the catalog's series on reg (nil: unregistered):
//
//   - copilot_proxy_model_catalog_age_seconds{account}: age of the catalog
//     held, computed when scraped.
//   - copilot_proxy_model_catalog_models{account}: models in it.
//   - copilot_proxy_model_catalog_refreshes_total{account,result}: fetches
//     of /models, result "ok" or "error".
//   - copilot_proxy_model_resolutions_total{rule}: request model names
//     resolved, by rule: exact, builtin, alias, unknown, none (no model).
//   - copilot_proxy_model_aliases, copilot_proxy_model_alias_bad_lines: the
//     alias file held; copilot_proxy_model_alias_reloads_total{result}.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		refreshes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "copilot_proxy_model_catalog_refreshes_total",
			Help: "Fetches of the Copilot API's /models by account and result (ok, error).",
		}, []string{"account", "result"}),
		models: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "copilot_proxy_model_catalog_models",
			Help: "Models in the catalog held, by account.",
		}, []string{"account"}),
		aliases: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "copilot_proxy_model_aliases",
			Help: "Aliases in the model alias file held.",
		}),
		badLines: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "copilot_proxy_model_alias_bad_lines",
			Help: "Lines of the model alias file ignored at its last load.",
		}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "copilot_proxy_model_alias_reloads_total",
			Help: "Reloads of the changed model alias file, by result (ok, error: the aliases held were kept).",
		}, []string{"result"}),
		ageDesc: prometheus.NewDesc("copilot_proxy_model_catalog_age_seconds",
			"Age of the model catalog held, by account.", []string{"account"}, nil),
		stores: map[*Store]struct{}{},
	}
	res := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "copilot_proxy_model_resolutions_total",
		Help: "Request model names resolved, by rule: exact (a catalog id), builtin (a client's name for one), alias (the alias file), unknown (sent as it is), none (no model named).",
	}, []string{"rule"})
	for r := RuleNone; r <= RuleUnknown; r++ {
		m.resolutions[r] = res.WithLabelValues(r.String())
	}
	if reg != nil {
		reg.MustRegister(m.refreshes, m.models, res, m.aliases, m.badLines, m.reloads, ageCollector{m})
	}
	return m
}

// Resolved counts one resolution.
func (m *Metrics) Resolved(r Rule) {
	if m != nil && r <= RuleUnknown {
		m.resolutions[r].Inc()
	}
}

func (m *Metrics) refreshed(account, result string) {
	if m != nil {
		m.refreshes.WithLabelValues(account, result).Inc()
	}
}

func (m *Metrics) catalogSize(account string, n int) {
	if m != nil {
		m.models.WithLabelValues(account).Set(float64(n))
	}
}

func (m *Metrics) aliasesLoaded(n, bad int) {
	if m != nil {
		m.aliases.Set(float64(n))
		m.badLines.Set(float64(bad))
	}
}

func (m *Metrics) aliasReload(result string) {
	if m != nil {
		m.reloads.WithLabelValues(result).Inc()
	}
}

func (m *Metrics) addStore(s *Store) {
	if m != nil {
		m.mu.Lock()
		m.stores[s] = struct{}{}
		m.mu.Unlock()
	}
}

func (m *Metrics) removeStore(s *Store) {
	if m != nil {
		m.mu.Lock()
		delete(m.stores, s)
		m.mu.Unlock()
	}
}

// ageCollector reports each held catalog's age at scrape time, on the
// store's clock.
type ageCollector struct{ m *Metrics }

func (c ageCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.m.ageDesc }

func (c ageCollector) Collect(ch chan<- prometheus.Metric) {
	c.m.mu.Lock()
	defer c.m.mu.Unlock()
	for s := range c.m.stores {
		now := s.clk.Now()
		s.accountsHeld(func(account string, cat *Catalog) {
			ch <- prometheus.MustNewConstMetric(c.m.ageDesc, prometheus.GaugeValue, now.Sub(cat.FetchedAt).Seconds(), account)
		})
	}
}
