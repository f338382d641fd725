package dialect

import "net/http"

// The errors the proxy answers itself.

// Unauthorized: no or an unknown API key.
func Unauthorized(msg string) Error {
	return Error{http.StatusUnauthorized, msg, "invalid_request_error", "invalid_api_key", "authentication_error"}
}

// NotFound: no route for the path.
func NotFound(msg string) Error {
	return Error{http.StatusNotFound, msg, "invalid_request_error", "not_found", "not_found_error"}
}

// Method: a route called with the wrong method.
func Method(msg string) Error {
	return Error{http.StatusMethodNotAllowed, msg, "invalid_request_error", "method_not_allowed", "invalid_request_error"}
}

// TooLarge: a body over the limit.
func TooLarge(msg string) Error {
	return Error{http.StatusRequestEntityTooLarge, msg, "invalid_request_error", "request_too_large", "request_too_large"}
}

// BadRequest: a body the proxy will not forward.
func BadRequest(msg string) Error {
	return Error{http.StatusBadRequest, msg, "invalid_request_error", "bad_request", "invalid_request_error"}
}

// Unavailable: no usable Copilot token.
func Unavailable(msg string) Error {
	return Error{http.StatusServiceUnavailable, msg, "server_error", "token_unavailable", "api_error"}
}

// Overloaded: the proxy holds too much to take the request now.
func Overloaded(msg string) Error {
	return Error{http.StatusServiceUnavailable, msg, "server_error", "overloaded", "overloaded_error"}
}

// BadGateway: the upstream could not be reached.
func BadGateway(msg string) Error {
	return Error{http.StatusBadGateway, msg, "server_error", "upstream_error", "api_error"}
}

// GatewayTimeout: the upstream did not answer in time.
func GatewayTimeout(msg string) Error {
	return Error{http.StatusGatewayTimeout, msg, "server_error", "upstream_timeout", "api_error"}
}
