package sandbox

import (
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/secret"
)

// faultRequest is the body of POST /_sandbox/faults/{exchange,api}.
type faultRequest struct {
	Count             int    `json:"count"`
	Status            int    `json:"status"`
	Reason            string `json:"reason"`
	RetryAfterSeconds int    `json:"retry_after_seconds"`
	UntilCleared      bool   `json:"until_cleared"`
}

type latencyRequest struct {
	ExchangeMS *int `json:"exchange_ms"`
	APIMS      *int `json:"api_ms"`
}

type tokenRequest struct {
	Token string `json:"token"`
}

type userCodeRequest struct {
	UserCode string `json:"user_code"`
}

type autoApproveRequest struct {
	AfterPolls int `json:"after_polls"`
}

func adminError(w http.ResponseWriter, status int, err error) {
	writeJSON(w, status, map[string]string{"error": err.Error()})
}

func adminOK(w http.ResponseWriter) { writeJSON(w, http.StatusOK, map[string]bool{"ok": true}) }

// adminDecode reads a JSON admin body into v, answering 400 itself.
func adminDecode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		adminError(w, http.StatusBadRequest, err)
		return false
	}
	return true
}

// redacted are headers whose values the admin API does not reveal.
var redacted = [...]string{"Authorization", "X-Api-Key", "Cookie", "Proxy-Authorization"}

func (s *Server) adminRoutes(m *http.ServeMux) {
	m.HandleFunc("GET /_sandbox/stats", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.Stats())
	})
	m.HandleFunc("GET /_sandbox/requests", func(w http.ResponseWriter, r *http.Request) {
		reqs := s.Requests()
		for _, q := range reqs {
			for _, h := range redacted {
				if q.Header.Get(h) != "" {
					q.Header.Set(h, secret.Redacted)
				}
			}
		}
		writeJSON(w, http.StatusOK, reqs)
	})
	m.HandleFunc("POST /_sandbox/reset-stats", func(w http.ResponseWriter, r *http.Request) {
		s.ResetStats()
		adminOK(w)
	})
	m.HandleFunc("POST /_sandbox/faults/{target}", s.adminFault)
	m.HandleFunc("POST /_sandbox/ws-faults", s.adminWSFaults)
	m.HandleFunc("DELETE /_sandbox/faults", func(w http.ResponseWriter, r *http.Request) {
		s.ClearFaults()
		adminOK(w)
	})
	m.HandleFunc("POST /_sandbox/latency", func(w http.ResponseWriter, r *http.Request) {
		var req latencyRequest
		if !adminDecode(w, r, &req) {
			return
		}
		if req.ExchangeMS != nil {
			s.SetExchangeLatency(time.Duration(*req.ExchangeMS) * time.Millisecond)
		}
		if req.APIMS != nil {
			s.SetAPILatency(time.Duration(*req.APIMS) * time.Millisecond)
		}
		adminOK(w)
	})
	m.HandleFunc("POST /_sandbox/github-tokens/{action}", func(w http.ResponseWriter, r *http.Request) {
		var req tokenRequest
		if !adminDecode(w, r, &req) {
			return
		}
		if req.Token == "" {
			adminError(w, http.StatusBadRequest, errors.New("token is required"))
			return
		}
		switch r.PathValue("action") {
		case "add":
			s.AddGitHubToken(secret.New(req.Token))
		case "revoke":
			s.RevokeGitHubToken(secret.New(req.Token))
		default:
			adminError(w, http.StatusNotFound, errors.New("unknown action; want add or revoke"))
			return
		}
		adminOK(w)
	})
	m.HandleFunc("POST /_sandbox/copilot-tokens/invalidate", func(w http.ResponseWriter, r *http.Request) {
		s.InvalidateCopilotTokens()
		adminOK(w)
	})
	m.HandleFunc("GET /_sandbox/device", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.DeviceCodes())
	})
	m.HandleFunc("POST /_sandbox/device/auto-approve", func(w http.ResponseWriter, r *http.Request) {
		var req autoApproveRequest
		if !adminDecode(w, r, &req) {
			return
		}
		s.SetDeviceAutoApprove(req.AfterPolls)
		adminOK(w)
	})
	m.HandleFunc("POST /_sandbox/device/{action}", s.adminDevice)
	s.adminAccountRoutes(m)
	s.adminRetireRoutes(m)
	s.adminUsageRoutes(m)
}

// accountRequest is the body of POST /_sandbox/accounts.
type accountRequest struct {
	Name               string `json:"name"`
	Token              string `json:"token"`
	SKU                string `json:"sku"`
	PremiumEntitlement int64  `json:"premium_entitlement"`
	OveragePermitted   bool   `json:"overage_permitted"`
}

func (s *Server) adminAccountRoutes(m *http.ServeMux) {
	m.HandleFunc("GET /_sandbox/accounts", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.Accounts())
	})
	m.HandleFunc("POST /_sandbox/accounts", func(w http.ResponseWriter, r *http.Request) {
		var req accountRequest
		if !adminDecode(w, r, &req) {
			return
		}
		tok, err := s.AddAccount(AccountConfig{
			Name: req.Name, GitHubToken: secret.New(req.Token), SKU: req.SKU,
			PremiumEntitlement: req.PremiumEntitlement, OveragePermitted: req.OveragePermitted,
		})
		if err != nil {
			adminError(w, http.StatusBadRequest, err)
			return
		}
		// The sandbox's tokens are fakes: the admin API hands them out so a
		// test or script can write them where the broker reads them.
		writeJSON(w, http.StatusOK, map[string]string{"name": req.Name, "token": tok.Reveal()})
	})
	m.HandleFunc("DELETE /_sandbox/accounts/{name}", func(w http.ResponseWriter, r *http.Request) {
		adminResult(w, s.RemoveAccount(r.PathValue("name")))
	})
	m.HandleFunc("POST /_sandbox/accounts/{name}/{action}", func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		var err error
		switch r.PathValue("action") {
		case "revoke":
			err = s.RevokeAccount(name)
		case "restore":
			err = s.RestoreAccount(name)
		case "spend-quota":
			err = s.SpendQuota(name)
		case "reset-quota":
			err = s.ResetQuota(name)
		default:
			adminError(w, http.StatusNotFound, errors.New("unknown action; want revoke, restore, spend-quota or reset-quota"))
			return
		}
		adminResult(w, err)
	})
	m.HandleFunc("POST /_sandbox/accounts/{name}/faults/{target}", func(w http.ResponseWriter, r *http.Request) {
		var req faultRequest
		if !adminDecode(w, r, &req) {
			return
		}
		f := Fault{Status: req.Status, Reason: req.Reason, RetryAfter: time.Duration(req.RetryAfterSeconds) * time.Second}
		if !req.UntilCleared && req.Count <= 0 {
			adminError(w, http.StatusBadRequest, errors.New("count must be positive unless until_cleared"))
			return
		}
		n := req.Count
		if req.UntilCleared {
			n = 0
		}
		var err error
		switch r.PathValue("target") {
		case "exchange":
			err = s.FailAccountExchanges(r.PathValue("name"), n, f)
		case "api":
			err = s.FailAccountAPI(r.PathValue("name"), n, f)
		default:
			adminError(w, http.StatusNotFound, errors.New("unknown fault target; want exchange or api"))
			return
		}
		adminResult(w, err)
	})
}

// adminResult answers ok, 404 for an unknown account, or 400.
func adminResult(w http.ResponseWriter, err error) {
	switch {
	case err == nil:
		adminOK(w)
	case errors.Is(err, ErrUnknownAccount):
		adminError(w, http.StatusNotFound, err)
	default:
		adminError(w, http.StatusBadRequest, err)
	}
}

func (s *Server) adminFault(w http.ResponseWriter, r *http.Request) {
	var req faultRequest
	if !adminDecode(w, r, &req) {
		return
	}
	f := Fault{Status: req.Status, Reason: req.Reason, RetryAfter: time.Duration(req.RetryAfterSeconds) * time.Second}
	if err := f.validate(); err != nil {
		adminError(w, http.StatusBadRequest, err)
		return
	}
	if !req.UntilCleared && req.Count <= 0 {
		adminError(w, http.StatusBadRequest, errors.New("count must be positive unless until_cleared"))
		return
	}
	switch target := r.PathValue("target"); {
	case target == "exchange" && req.UntilCleared:
		s.FailExchangesUntilCleared(f)
	case target == "exchange":
		s.FailExchanges(req.Count, f)
	case target == "api" && req.UntilCleared:
		s.FailAPIUntilCleared(f)
	case target == "api":
		s.FailAPI(req.Count, f)
	default:
		adminError(w, http.StatusNotFound, errors.New("unknown fault target; want exchange or api"))
		return
	}
	adminOK(w)
}

func (s *Server) adminDevice(w http.ResponseWriter, r *http.Request) {
	var req userCodeRequest
	if !adminDecode(w, r, &req) {
		return
	}
	var err error
	switch r.PathValue("action") {
	case "approve":
		err = s.ApproveDevice(req.UserCode)
	case "deny":
		err = s.DenyDevice(req.UserCode)
	case "expire":
		err = s.ExpireDevice(req.UserCode)
	default:
		adminError(w, http.StatusNotFound, errors.New("unknown action; want approve, deny, expire or auto-approve"))
		return
	}
	if err != nil {
		adminError(w, http.StatusNotFound, err)
		return
	}
	adminOK(w)
}
