package fakewa

import "net/http"

// mediaBlob is an encrypted file on the fake's media hosts.
type mediaBlob struct {
	data []byte
}

// Upload is one file a client uploaded.
type Upload struct {
	Path string
	Data []byte
}

func (s *Server) serveMedia(w http.ResponseWriter, r *http.Request) {
	http.NotFound(w, r)
}
