package translate

import "strings"

// parseDataURL splits "data:<media>;base64,<data>".
func parseDataURL(u string) (media, data string, ok bool) {
	rest, ok := strings.CutPrefix(u, "data:")
	if !ok {
		return "", "", false
	}
	meta, data, ok := strings.Cut(rest, ",")
	if !ok {
		return "", "", false
	}
	media, b64 := strings.CutSuffix(meta, ";base64")
	if !b64 {
		return "", "", false
	}
	return media, data, true
}

// imagePart builds an image part from an OpenAI image_url value.
func imagePart(url, detail string) Part {
	if media, data, ok := parseDataURL(url); ok {
		return Part{Kind: PartImage, MediaType: media, Data: data, Detail: detail}
	}
	return Part{Kind: PartImage, URL: url, Detail: detail}
}

// imageURL is the OpenAI form of an image part: its URL or a data URL.
func (p *Part) imageURL() string {
	if p.URL != "" {
		return p.URL
	}
	return "data:" + p.MediaType + ";base64," + p.Data
}
