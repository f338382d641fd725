package inspect

// The tests below were written against the walks the scan replaced; these
// helpers give each its answer from the one scan.

// inspect is the scan's classification, the agent default for a refused
// body.
func inspect(shape Shape, body []byte) Result {
	r, _ := Scan(nil, shape, body)
	return r
}

// inspectUntil is inspect with a done channel, also returning the steps.
func inspectUntil(done <-chan struct{}, shape Shape, body []byte) (Result, int) {
	r, steps, _ := scan(done, shape, body)
	return r, steps
}

// conversationHash is the affinity hash of a scanned body.
func conversationHash(shape Shape, body []byte) uint64 {
	r, err := Scan(nil, shape, body)
	if err != nil {
		return 0
	}
	return r.Affinity(body)
}

// requestModel is the model label of a body.
func requestModel(body []byte) string {
	r, _ := Scan(nil, Messages, body)
	return r.Model(body)
}

// findModel is the model span of an embeddings body.
func findModel(body []byte) (start, end int) {
	r, _ := Scan(nil, Opaque, body)
	return r.ModelStart, r.ModelEnd
}
