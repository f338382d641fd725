package identity

import "testing"

func TestIsRejection(t *testing.T) {
	tests := []struct {
		status int
		body   string
		want   bool
	}{
		{466, "", true},
		{466, `{"message":"anything"}`, true},
		{400, `{"error":{"message":"API version no longer supported"}}`, true},
		{410, `{"message":"Client not supported"}`, true},
		{400, `{"error":{"message":"invalid Editor-Version header"}}`, true},
		{404, `{"message":"Unsupported X-GitHub-Api-Version 2025-05-01"}`, true},
		{400, `{"error":{"code":"unsupported_api_for_model"}}`, false},
		{400, `{"error":{"message":"model gpt-9 not supported"}}`, false},
		{404, `{"message":"Not Found"}`, false},
		{429, `{"message":"api version rate limited"}`, false},
		{200, `client not supported`, false},
	}
	for _, tt := range tests {
		if got := IsRejection(tt.status, []byte(tt.body)); got != tt.want {
			t.Errorf("IsRejection(%d, %s) = %v; want %v", tt.status, tt.body, got, tt.want)
		}
	}
}
