package fakewa

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.mau.fi/whatsmeow"
	waBinary "go.mau.fi/whatsmeow/binary"
	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/util/hkdfutil"
	"google.golang.org/protobuf/proto"
)

// The hosts the fake serves files on: encrypted media (named in the
// media_conn answer) and profile pictures.
const (
	mediaHost   = "mmg.whatsapp.net"
	pictureHost = "pps.whatsapp.net"
)

// maxUpload bounds one upload, as WhatsApp does (it allows 2 GB; tests
// never need more than this).
const maxUpload = 64 << 20

// mediaMACLength is how much of the HMAC-SHA256 trails an encrypted file.
const mediaMACLength = 10

// mediaKind is what WhatsApp knows of a media type: the upload path's
// type (the mms type) and the folder its files land in.
type mediaKind struct {
	mms    string
	folder string
}

// mediaKinds maps whatsmeow's media types (the HKDF info strings) to
// their mms types, as whatsmeow's upload.go does; the folders are shaped
// like WhatsApp's CDN paths.
var mediaKinds = map[whatsmeow.MediaType]mediaKind{
	whatsmeow.MediaImage:         {"image", "t62.7118-24"},
	whatsmeow.MediaVideo:         {"video", "t62.7161-24"},
	whatsmeow.MediaAudio:         {"audio", "t62.7117-24"},
	whatsmeow.MediaDocument:      {"document", "t62.7119-24"},
	whatsmeow.MediaHistory:       {"md-msg-hist", "t62.36145-24"},
	whatsmeow.MediaAppState:      {"md-app-state", "t62.36146-24"},
	whatsmeow.MediaStickerPack:   {"sticker-pack", "t62.15575-24"},
	whatsmeow.MediaLinkThumbnail: {"thumbnail-link", "t62.36144-24"},
}

func mediaTypeOfMMS(mms string) (whatsmeow.MediaType, bool) {
	for t, k := range mediaKinds {
		if k.mms == mms {
			return t, true
		}
	}
	return "", false
}

// MediaKeys expands a 32-byte media key for a media type as WhatsApp
// does: HKDF-SHA256 with the type as info, 112 bytes, of which the IV,
// the AES key and the MAC key are used.
func MediaKeys(mediaKey []byte, mediaType whatsmeow.MediaType) (iv, cipherKey, macKey []byte) {
	x := hkdfutil.SHA256(mediaKey, nil, []byte(mediaType), 112)
	return x[:16], x[16:48], x[48:80]
}

// mediaBlob is a file on the fake's media hosts: an encrypted file on mmg
// or a plain profile picture on pps.
type mediaBlob struct {
	host      string
	data      []byte
	mediaType whatsmeow.MediaType // "" for a picture
	gone      bool                // deleted: WhatsApp answers 410
}

// Upload is one file a client uploaded, as the server saw it: encrypted.
type Upload struct {
	Path      string // the direct path it is served at
	URL       string
	Data      []byte // the encrypted file (ciphertext and MAC)
	MediaType whatsmeow.MediaType
	MMSType   string // the type in the upload path (image, document, …)
	Handle    string
}

// Uploads lists what clients uploaded, oldest first.
func (s *Server) Uploads() []Upload {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Upload(nil), s.uploads...)
}

func init() {
	iqHandlers = append(iqHandlers, mediaConnIQ)
}

// mediaConnIQ answers the client's question for media hosts and the auth
// token uploads need (whatsmeow's mediaconn.go reads these four
// attributes and each host's name).
func mediaConnIQ(s *Server, c *conn, comp *companion, iq *waBinary.Node, xmlns, typ string, first waBinary.Node) bool {
	if xmlns != "w:m" || typ != "set" || first.Tag != "media_conn" {
		return false
	}
	s.mu.Lock()
	auth := s.mediaAuthLocked()
	s.mu.Unlock()
	c.send(result(iq, waBinary.Node{Tag: "media_conn",
		Attrs:   waBinary.Attrs{"auth": auth, "ttl": 300, "auth_ttl": 21600, "max_buckets": 12},
		Content: []waBinary.Node{{Tag: "host", Attrs: waBinary.Attrs{"hostname": mediaHost}}},
	}))
	return true
}

// mediaAuthLocked is the server's upload auth token, made at first use;
// s.mu is held.
func (s *Server) mediaAuthLocked() string {
	if s.mediaAuth == "" {
		s.mediaAuth = base64.RawURLEncoding.EncodeToString(randomBytes(24))
	}
	return s.mediaAuth
}

// RotateMediaAuth replaces the upload auth token: a client still holding
// the old one (whatsmeow caches media_conn for its ttl) is refused.
func (s *Server) RotateMediaAuth() {
	s.mu.Lock()
	s.mediaAuth = base64.RawURLEncoding.EncodeToString(randomBytes(24))
	s.mu.Unlock()
}

// urlKey signs the fake's CDN paths (the oh parameter), so a path the
// server did not hand out, or an edited one, is refused as WhatsApp's CDN
// refuses it.
var urlKey = randomBytes(32)

func urlSignature(path, oe string) string {
	m := hmac.New(sha256.New, urlKey)
	m.Write([]byte(path + "|" + oe))
	return "01_" + base64.RawURLEncoding.EncodeToString(m.Sum(nil)[:24])
}

// storeBlobLocked keeps a file and returns its direct path: the URL path
// and the signed query WhatsApp's CDN wants; s.mu is held.
func (s *Server) storeBlobLocked(host, folder, ext string, b *mediaBlob) string {
	path := fmt.Sprintf("/v/%s/%d_%d_%d_n.%s", folder, randomUint(1e18), randomUint(1e16), randomUint(1e18), ext)
	oe := strconv.FormatInt(s.clock().Add(30*24*time.Hour).Unix(), 16)
	b.host = host
	s.media[path] = b
	q := "ccb=11-4&oh=" + urlSignature(path, oe) + "&oe=" + strings.ToUpper(oe) + "&_nc_sid=5e03e0"
	return path + "?" + q
}

func randomUint(limit uint64) uint64 {
	var n uint64
	for _, b := range randomBytes(8) {
		n = n<<8 | uint64(b)
	}
	return n % limit
}

func (s *Server) serveMedia(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.Host == mediaHost && r.Method == http.MethodPost && strings.HasPrefix(r.URL.Path, "/mms/"):
		s.serveUpload(w, r)
	case (r.Host == mediaHost || r.Host == pictureHost) && r.Method == http.MethodGet:
		s.serveBlob(w, r)
	default:
		http.NotFound(w, r)
	}
}

// serveUpload takes a client's encrypted file. The server cannot decrypt
// it; it checks what WhatsApp can: the media_conn auth token, that the
// token in the path is the base64url SHA-256 of the body, and that there
// is a body.
func (s *Server) serveUpload(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/mms/"), "/")
	if len(parts) != 2 {
		http.NotFound(w, r)
		return
	}
	mediaType, ok := mediaTypeOfMMS(parts[0])
	if !ok {
		http.Error(w, "unknown media type "+parts[0], http.StatusBadRequest)
		return
	}
	token := parts[1]
	q := r.URL.Query()
	s.mu.Lock()
	auth := s.mediaAuthLocked()
	s.mu.Unlock()
	if !hmac.Equal([]byte(q.Get("auth")), []byte(auth)) {
		http.Error(w, "bad auth", http.StatusUnauthorized)
		return
	}
	if q.Get("token") != token {
		http.Error(w, "token mismatch", http.StatusBadRequest)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxUpload+1))
	switch {
	case err != nil:
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	case len(body) > maxUpload:
		http.Error(w, "too large", http.StatusRequestEntityTooLarge)
		return
	case len(body) == 0:
		http.Error(w, "empty upload", http.StatusBadRequest)
		return
	}
	sum := sha256.Sum256(body)
	if base64.URLEncoding.EncodeToString(sum[:]) != token {
		http.Error(w, "hash mismatch", http.StatusBadRequest)
		return
	}
	kind := mediaKinds[mediaType]
	handle := base64.RawURLEncoding.EncodeToString(randomBytes(30))
	s.mu.Lock()
	dp := s.storeBlobLocked(mediaHost, kind.folder, "enc", &mediaBlob{data: body, mediaType: mediaType})
	up := Upload{Path: dp, URL: "https://" + mediaHost + dp, Data: body, MediaType: mediaType, MMSType: kind.mms, Handle: handle}
	s.uploads = append(s.uploads, up)
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]string{"url": up.URL, "direct_path": dp, "handle": handle})
}

// serveBlob serves a stored file to whoever has its signed path: 404 for
// a path never handed out, 403 for a bad or expired signature, 410 for a
// deleted file.
func (s *Server) serveBlob(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	s.mu.Lock()
	b := s.media[r.URL.Path]
	var data []byte
	gone, found := false, false
	if b != nil {
		data, gone, found = b.data, b.gone, b.host == r.Host
	}
	now := s.clock()
	s.mu.Unlock()
	if !found {
		http.NotFound(w, r)
		return
	}
	oe := strings.ToLower(q.Get("oe"))
	exp, err := strconv.ParseInt(oe, 16, 64)
	if err != nil || !hmac.Equal([]byte(q.Get("oh")), []byte(urlSignature(r.URL.Path, oe))) {
		http.Error(w, "URL signature mismatch", http.StatusForbidden)
		return
	}
	if now.Unix() > exp {
		http.Error(w, "URL signature expired", http.StatusForbidden)
		return
	}
	if gone {
		http.Error(w, "gone", http.StatusGone)
		return
	}
	if r.Host == pictureHost {
		w.Header().Set("Content-Type", "image/jpeg")
	} else {
		w.Header().Set("Content-Type", "application/octet-stream")
	}
	w.Write(data)
}

// blobOf finds a stored file by direct path or URL; s.mu is held.
func (s *Server) blobOf(pathOrURL string) *mediaBlob {
	u, err := url.Parse(pathOrURL)
	if err != nil {
		return nil
	}
	return s.media[u.Path]
}

// TamperMedia flips one byte of a stored encrypted file's ciphertext (as
// a corrupting server or disk would) and returns the file's new SHA-256,
// for messages that claim it so that the MAC check is what fails.
func (s *Server) TamperMedia(directPath string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.blobOf(directPath)
	if b == nil || len(b.data) <= mediaMACLength {
		return nil, fmt.Errorf("no media at %s", directPath)
	}
	// A copy: uploads keep what the client sent.
	b.data = append([]byte(nil), b.data...)
	b.data[0] ^= 0x01
	sum := sha256.Sum256(b.data)
	return sum[:], nil
}

// DeleteMedia removes a file from the media hosts as WhatsApp does after
// a while: downloads get 410 Gone.
func (s *Server) DeleteMedia(directPath string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.blobOf(directPath)
	if b == nil {
		return fmt.Errorf("no media at %s", directPath)
	}
	b.gone = true
	return nil
}

// MediaInfo is a file encrypted and stored as a phone stores one before
// sending it: what goes into the message.
type MediaInfo struct {
	MediaType     whatsmeow.MediaType
	URL           string
	DirectPath    string
	MediaKey      []byte
	FileSHA256    []byte
	FileEncSHA256 []byte
	FileLength    uint64
}

// EncryptMedia does what a phone does before sending a file: a random
// media key, the keys expanded from it for mediaType (whatsmeow's
// MediaType is the HKDF info string, whatsmeow.MediaHistory included),
// AES-256-CBC, a 10-byte HMAC-SHA256 over IV and ciphertext; the result
// is stored on the media host.
func (s *Server) EncryptMedia(plain []byte, mediaType whatsmeow.MediaType) (MediaInfo, error) {
	kind, ok := mediaKinds[mediaType]
	if !ok {
		return MediaInfo{}, fmt.Errorf("unknown media type %q", mediaType)
	}
	key := randomBytes(32)
	blob, err := encryptMedia(key, mediaType, plain)
	if err != nil {
		return MediaInfo{}, err
	}
	sum, encSum := sha256.Sum256(plain), sha256.Sum256(blob)
	s.mu.Lock()
	dp := s.storeBlobLocked(mediaHost, kind.folder, "enc", &mediaBlob{data: blob, mediaType: mediaType})
	s.mu.Unlock()
	return MediaInfo{
		MediaType: mediaType, URL: "https://" + mediaHost + dp, DirectPath: dp,
		MediaKey: key, FileSHA256: sum[:], FileEncSHA256: encSum[:], FileLength: uint64(len(plain)),
	}, nil
}

func encryptMedia(mediaKey []byte, mediaType whatsmeow.MediaType, plain []byte) ([]byte, error) {
	iv, cipherKey, macKey := MediaKeys(mediaKey, mediaType)
	block, err := aes.NewCipher(cipherKey)
	if err != nil {
		return nil, err
	}
	n := aes.BlockSize - len(plain)%aes.BlockSize
	ct := append(append(make([]byte, 0, len(plain)+n+mediaMACLength), plain...), bytes.Repeat([]byte{byte(n)}, n)...)
	cipher.NewCBCEncrypter(block, iv).CryptBlocks(ct, ct)
	m := hmac.New(sha256.New, macKey)
	m.Write(iv)
	m.Write(ct)
	return append(ct, m.Sum(nil)[:mediaMACLength]...), nil
}

// decryptMedia checks an encrypted file as a phone does (the file's
// SHA-256, the MAC, the padding, then the plaintext's length and
// SHA-256) and returns the plaintext. The errors are whatsmeow's, so
// tests can tell which check failed.
func decryptMedia(blob []byte, mediaType whatsmeow.MediaType, mediaKey, encSHA, plainSHA []byte, length uint64) ([]byte, error) {
	// Unlike whatsmeow, which skips a missing hash, a phone requires both:
	// the comparisons below fail without them.
	if len(blob) <= mediaMACLength {
		return nil, whatsmeow.ErrTooShortFile
	}
	if sum := sha256.Sum256(blob); !bytes.Equal(sum[:], encSHA) {
		return nil, whatsmeow.ErrInvalidMediaEncSHA256
	}
	ct, mac := blob[:len(blob)-mediaMACLength], blob[len(blob)-mediaMACLength:]
	iv, cipherKey, macKey := MediaKeys(mediaKey, mediaType)
	m := hmac.New(sha256.New, macKey)
	m.Write(iv)
	m.Write(ct)
	if !hmac.Equal(m.Sum(nil)[:mediaMACLength], mac) {
		return nil, whatsmeow.ErrInvalidMediaHMAC
	}
	if len(ct) == 0 || len(ct)%aes.BlockSize != 0 {
		return nil, errors.New("ciphertext is not whole AES blocks")
	}
	block, err := aes.NewCipher(cipherKey)
	if err != nil {
		return nil, err
	}
	plain := make([]byte, len(ct))
	cipher.NewCBCDecrypter(block, iv).CryptBlocks(plain, ct)
	n := int(plain[len(plain)-1])
	if n == 0 || n > aes.BlockSize || !bytes.HasSuffix(plain, bytes.Repeat([]byte{byte(n)}, n)) {
		return nil, errors.New("bad PKCS#7 padding")
	}
	plain = plain[:len(plain)-n]
	if uint64(len(plain)) != length {
		return nil, fmt.Errorf("%w: expected %d, got %d", whatsmeow.ErrFileLengthMismatch, length, len(plain))
	}
	if sum := sha256.Sum256(plain); !bytes.Equal(sum[:], plainSHA) {
		return nil, whatsmeow.ErrInvalidMediaSHA256
	}
	return plain, nil
}

// Downloadable is an attachment with its length, as every media message
// (image, video, audio, document, sticker) is.
type Downloadable interface {
	whatsmeow.DownloadableMessage
	GetFileLength() uint64
}

// DownloadMedia is a phone opening an attachment a client sent: it fetches
// the file over HTTPS by its direct path (as whatsmeow does, with hash and
// mms-type), and checks it as decryptMedia says. An HTTP failure is a
// whatsmeow.DownloadHTTPError (errors.Is ErrMediaDownloadFailedWith404…).
func (s *Server) DownloadMedia(ctx context.Context, msg Downloadable) ([]byte, error) {
	mediaType := whatsmeow.GetMediaType(msg)
	kind, ok := mediaKinds[mediaType]
	if !ok {
		return nil, fmt.Errorf("%T is not a media message", msg)
	}
	var u string
	switch dp := msg.GetDirectPath(); {
	case strings.HasPrefix(dp, "/"):
		u = fmt.Sprintf("https://%s%s&hash=%s&mms-type=%s&__wa-mms=", mediaHost, dp,
			base64.URLEncoding.EncodeToString(msg.GetFileEncSHA256()), kind.mms)
	default:
		withURL, ok := msg.(interface{ GetURL() string })
		if !ok || withURL.GetURL() == "" {
			return nil, whatsmeow.ErrNoURLPresent
		}
		u = withURL.GetURL()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	hc := s.HTTPClient()
	defer hc.CloseIdleConnections()
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, whatsmeow.DownloadHTTPError{Response: resp}
	}
	blob, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	return decryptMedia(blob, mediaType, msg.GetMediaKey(), msg.GetFileEncSHA256(), msg.GetFileSHA256(), msg.GetFileLength())
}

// Attachment is the message's downloadable file (image, video, audio,
// document or sticker), nil if it has none.
func (m Message) Attachment() Downloadable {
	msg := m.Msg
	switch {
	case msg.GetImageMessage() != nil:
		return msg.GetImageMessage()
	case msg.GetVideoMessage() != nil:
		return msg.GetVideoMessage()
	case msg.GetAudioMessage() != nil:
		return msg.GetAudioMessage()
	case msg.GetDocumentMessage() != nil:
		return msg.GetDocumentMessage()
	case msg.GetStickerMessage() != nil:
		return msg.GetStickerMessage()
	}
	return nil
}

// Image is an image message carrying the file.
func (mi MediaInfo) Image(mimetype, caption string) *waE2E.ImageMessage {
	m := &waE2E.ImageMessage{Mimetype: proto.String(mimetype), URL: proto.String(mi.URL), DirectPath: proto.String(mi.DirectPath),
		MediaKey: mi.MediaKey, FileSHA256: mi.FileSHA256, FileEncSHA256: mi.FileEncSHA256, FileLength: proto.Uint64(mi.FileLength),
		MediaKeyTimestamp: proto.Int64(time.Now().Unix())}
	if caption != "" {
		m.Caption = proto.String(caption)
	}
	return m
}

// Document is a document message carrying the file.
func (mi MediaInfo) Document(mimetype, fileName, caption string) *waE2E.DocumentMessage {
	m := &waE2E.DocumentMessage{Mimetype: proto.String(mimetype), FileName: proto.String(fileName), Title: proto.String(fileName),
		URL: proto.String(mi.URL), DirectPath: proto.String(mi.DirectPath),
		MediaKey: mi.MediaKey, FileSHA256: mi.FileSHA256, FileEncSHA256: mi.FileEncSHA256, FileLength: proto.Uint64(mi.FileLength),
		MediaKeyTimestamp: proto.Int64(time.Now().Unix())}
	if caption != "" {
		m.Caption = proto.String(caption)
	}
	return m
}

// Audio is an audio message (a voice note when ptt) carrying the file.
func (mi MediaInfo) Audio(mimetype string, ptt bool) *waE2E.AudioMessage {
	return &waE2E.AudioMessage{Mimetype: proto.String(mimetype), PTT: proto.Bool(ptt), URL: proto.String(mi.URL), DirectPath: proto.String(mi.DirectPath),
		MediaKey: mi.MediaKey, FileSHA256: mi.FileSHA256, FileEncSHA256: mi.FileEncSHA256, FileLength: proto.Uint64(mi.FileLength),
		MediaKeyTimestamp: proto.Int64(time.Now().Unix())}
}

// Video is a video message carrying the file.
func (mi MediaInfo) Video(mimetype, caption string) *waE2E.VideoMessage {
	m := &waE2E.VideoMessage{Mimetype: proto.String(mimetype), URL: proto.String(mi.URL), DirectPath: proto.String(mi.DirectPath),
		MediaKey: mi.MediaKey, FileSHA256: mi.FileSHA256, FileEncSHA256: mi.FileEncSHA256, FileLength: proto.Uint64(mi.FileLength),
		MediaKeyTimestamp: proto.Int64(time.Now().Unix())}
	if caption != "" {
		m.Caption = proto.String(caption)
	}
	return m
}

// Sticker is a sticker message carrying the file (stickers use the image
// keys).
func (mi MediaInfo) Sticker(mimetype string) *waE2E.StickerMessage {
	return &waE2E.StickerMessage{Mimetype: proto.String(mimetype), URL: proto.String(mi.URL), DirectPath: proto.String(mi.DirectPath),
		MediaKey: mi.MediaKey, FileSHA256: mi.FileSHA256, FileEncSHA256: mi.FileEncSHA256, FileLength: proto.Uint64(mi.FileLength),
		MediaKeyTimestamp: proto.Int64(time.Now().Unix())}
}
