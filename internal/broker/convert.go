package broker

import (
	"time"

	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
	"github.com/copilot-broker/copilot-broker/internal/tokens"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// ToProto converts a token state to its API form. The token value is
// revealed here, at the edge where it is sent to an authenticated caller,
// and only while the status carries a token.
func ToProto(st tokens.State) *brokerv1.Token {
	t := &brokerv1.Token{
		Account:    st.Account,
		Generation: st.Generation,
		Epoch:      st.Epoch,
		ExpiresAt:  timestamp(st.ExpiresAt),
		RefreshAt:  timestamp(st.RefreshAt),
		ApiBaseUrl: st.APIBaseURL,
		Sku:        st.SKU,
		Status:     StatusToProto(st.Status),
		LastError:  st.LastError,
	}
	if st.Status.HasToken() {
		t.Value = st.Token.Reveal()
	}
	return t
}

// StatusToProto maps a lifecycle status to the API enum.
func StatusToProto(s tokens.Status) brokerv1.TokenStatus {
	switch s {
	case tokens.StatusPending:
		return brokerv1.TokenStatus_TOKEN_STATUS_PENDING
	case tokens.StatusValid:
		return brokerv1.TokenStatus_TOKEN_STATUS_VALID
	case tokens.StatusStale:
		return brokerv1.TokenStatus_TOKEN_STATUS_STALE
	case tokens.StatusExpired:
		return brokerv1.TokenStatus_TOKEN_STATUS_EXPIRED
	case tokens.StatusRejected:
		return brokerv1.TokenStatus_TOKEN_STATUS_REJECTED
	}
	return brokerv1.TokenStatus_TOKEN_STATUS_UNSPECIFIED
}

func timestamp(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

// stateError returns the gRPC error for a state that carries no token, nil
// for VALID and STALE. The error's details carry the state (without a
// value), so a client learns the generation, epoch and last error.
func stateError(st tokens.State) error {
	var code codes.Code
	var msg string
	switch st.Status {
	case tokens.StatusValid, tokens.StatusStale:
		return nil
	case tokens.StatusPending:
		code, msg = codes.Unavailable, "no token yet: the first exchange with GitHub has not succeeded"
	case tokens.StatusExpired:
		code, msg = codes.Unavailable, "the token expired and no new one could be obtained yet"
	case tokens.StatusRejected:
		code, msg = codes.FailedPrecondition, "GitHub rejected the credential; replace the GitHub token (file re-read, SIGHUP or restart)"
	default:
		code, msg = codes.Internal, "token in unknown state "+st.Status.String()
	}
	if st.LastError != "" {
		msg += ": " + st.LastError
	}
	sts := status.New(code, msg)
	if withDetails, err := sts.WithDetails(ToProto(st)); err == nil {
		sts = withDetails
	}
	return sts.Err()
}
