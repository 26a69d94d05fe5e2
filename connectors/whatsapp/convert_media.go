package whatsapp

import (
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"path"
	"strings"

	"go.mau.fi/whatsmeow"
	"go.mau.fi/whatsmeow/proto/waE2E"
	"google.golang.org/protobuf/proto"

	"github.com/phonebridge/phonebridge/bridge"
)

// Media kinds, as WhatsApp has them.
const (
	mediaImage    = "image"
	mediaVideo    = "video"
	mediaAudio    = "audio"
	mediaDocument = "document"
	mediaSticker  = "sticker"
)

// mediaRef is what Media.Ref holds (as JSON): enough to download the
// attachment again later, after restarts, without the message.
type mediaRef struct {
	Kind          string `json:"kind"` // image, video, audio, document or sticker
	DirectPath    string `json:"direct_path,omitempty"`
	URL           string `json:"url,omitempty"` // only for old messages without a direct path
	MediaKey      []byte `json:"media_key"`
	FileEncSHA256 []byte `json:"file_enc_sha256,omitempty"`
	FileSHA256    []byte `json:"file_sha256,omitempty"`
	FileLength    uint64 `json:"file_length,omitempty"`
	MIME          string `json:"mime,omitempty"`
}

// encodeMediaRef is the Media.Ref for r.
func encodeMediaRef(r mediaRef) string {
	b, err := json.Marshal(r)
	if err != nil {
		panic("whatsapp: mediaRef does not encode: " + err.Error()) // plain fields: cannot happen
	}
	return string(b)
}

// decodeMediaRef reads a Media.Ref made by encodeMediaRef.
func decodeMediaRef(s string) (mediaRef, error) {
	var r mediaRef
	if s == "" {
		return r, errors.New("the attachment has no WhatsApp reference")
	}
	if err := json.Unmarshal([]byte(s), &r); err != nil {
		return mediaRef{}, fmt.Errorf("the WhatsApp attachment reference is not readable: %w", err)
	}
	switch r.Kind {
	case mediaImage, mediaVideo, mediaAudio, mediaDocument, mediaSticker:
	default:
		return mediaRef{}, fmt.Errorf("the WhatsApp attachment reference has an unknown kind %q", r.Kind)
	}
	if r.DirectPath == "" && r.URL == "" {
		return mediaRef{}, errors.New("the WhatsApp attachment reference has no download path")
	}
	if len(r.MediaKey) == 0 {
		return mediaRef{}, errors.New("the WhatsApp attachment reference has no media key")
	}
	return r, nil
}

// mediaType is the whatsmeow media type to download r with (stickers are
// encrypted as images).
func (r mediaRef) mediaType() whatsmeow.MediaType {
	switch r.Kind {
	case mediaImage, mediaSticker:
		return whatsmeow.MediaImage
	case mediaVideo:
		return whatsmeow.MediaVideo
	case mediaAudio:
		return whatsmeow.MediaAudio
	}
	return whatsmeow.MediaDocument
}

// Inbound attachments. Each returns the Media and a label that stands in
// for the text in quoted previews when there is no caption.

func imageMedia(m *waE2E.ImageMessage) (bridge.Media, string) {
	return attachment(mediaImage, m.GetMimetype(), "image/jpeg", "image", m.GetCaption(), m.GetFileLength(),
		m.GetDirectPath(), m.GetURL(), m.GetMediaKey(), m.GetFileEncSHA256(), m.GetFileSHA256()), "Photo"
}

func videoMedia(m *waE2E.VideoMessage, note bool) (bridge.Media, string) {
	label := "Video"
	switch {
	case note:
		label = "Video message"
	case m.GetGifPlayback():
		label = "GIF"
	}
	return attachment(mediaVideo, m.GetMimetype(), "video/mp4", "video", m.GetCaption(), m.GetFileLength(),
		m.GetDirectPath(), m.GetURL(), m.GetMediaKey(), m.GetFileEncSHA256(), m.GetFileSHA256()), label
}

func audioMedia(m *waE2E.AudioMessage) (bridge.Media, string) {
	base, label := "audio", "Audio"
	if m.GetPTT() {
		base, label = "voice", "Voice message"
	}
	return attachment(mediaAudio, m.GetMimetype(), "audio/ogg", base, "", m.GetFileLength(),
		m.GetDirectPath(), m.GetURL(), m.GetMediaKey(), m.GetFileEncSHA256(), m.GetFileSHA256()), label
}

func documentMedia(m *waE2E.DocumentMessage) (bridge.Media, string) {
	md := attachment(mediaDocument, m.GetMimetype(), "application/octet-stream", "document", m.GetCaption(), m.GetFileLength(),
		m.GetDirectPath(), m.GetURL(), m.GetMediaKey(), m.GetFileEncSHA256(), m.GetFileSHA256())
	for _, n := range []string{m.GetFileName(), m.GetTitle()} {
		if n = cleanFileName(n); n != "" {
			md.Name = n
			break
		}
	}
	return md, "📄 " + md.Name
}

func stickerMedia(m *waE2E.StickerMessage) (bridge.Media, string) {
	return attachment(mediaSticker, m.GetMimetype(), "image/webp", "sticker", "", m.GetFileLength(),
		m.GetDirectPath(), m.GetURL(), m.GetMediaKey(), m.GetFileEncSHA256(), m.GetFileSHA256()), "Sticker"
}

// attachment builds the neutral Media for one WhatsApp attachment.
func attachment(kind, mimeType, defaultMIME, base, caption string, size uint64,
	directPath, url string, key, encSHA, sha []byte) bridge.Media {
	if mimeType == "" {
		mimeType = defaultMIME
	}
	return bridge.Media{
		MIME:    mimeType,
		Name:    base + extensionFor(mimeType),
		Size:    int64(min(size, 1<<62)),
		Caption: caption,
		Ref: encodeMediaRef(mediaRef{
			Kind: kind, DirectPath: directPath, URL: url, MediaKey: key,
			FileEncSHA256: encSHA, FileSHA256: sha, FileLength: size, MIME: mimeType,
		}),
	}
}

// cleanFileName keeps a sender's file name from naming a path.
func cleanFileName(n string) string {
	n = strings.TrimSpace(strings.ReplaceAll(n, "\\", "/"))
	if n == "" {
		return ""
	}
	n = path.Base(n)
	if n == "." || n == "/" || n == ".." {
		return ""
	}
	return n
}

// Extensions for the MIME types WhatsApp uses; mime.ExtensionsByType
// depends on the system's tables and lists .jfif before .jpg.
var mimeExtensions = map[string]string{
	"image/jpeg":               ".jpg",
	"image/png":                ".png",
	"image/webp":               ".webp",
	"image/gif":                ".gif",
	"video/mp4":                ".mp4",
	"video/3gpp":               ".3gp",
	"video/quicktime":          ".mov",
	"video/webm":               ".webm",
	"audio/ogg":                ".ogg",
	"audio/opus":               ".opus",
	"audio/mpeg":               ".mp3",
	"audio/mp4":                ".m4a",
	"audio/x-m4a":              ".m4a",
	"audio/aac":                ".aac",
	"audio/amr":                ".amr",
	"audio/wav":                ".wav",
	"application/pdf":          ".pdf",
	"application/zip":          ".zip",
	"text/plain":               ".txt",
	"application/octet-stream": "",
}

// baseMIME is a MIME type without parameters, in lower case.
func baseMIME(t string) string {
	if i := strings.IndexByte(t, ';'); i >= 0 {
		t = t[:i]
	}
	return strings.ToLower(strings.TrimSpace(t))
}

func extensionFor(mimeType string) string {
	t := baseMIME(mimeType)
	if ext, ok := mimeExtensions[t]; ok {
		return ext
	}
	if exts, _ := mime.ExtensionsByType(t); len(exts) > 0 {
		return exts[0]
	}
	return ""
}

// mimeForName guesses a MIME type from a file name's extension.
func mimeForName(name string) string {
	ext := strings.ToLower(path.Ext(name))
	if ext == "" {
		return ""
	}
	for t, e := range mimeExtensions {
		if e == ext && t != "audio/x-m4a" {
			return t
		}
	}
	return baseMIME(mime.TypeByExtension(ext))
}

// mediaKind picks how to send an attachment, by MIME type (or, when that
// is missing, by file name): JPEG and PNG as images, MP4 and 3GP as
// videos, Ogg/Opus as voice notes and other audio WhatsApp plays as audio,
// everything else (GIF, WebP, other formats) as a document, which keeps
// the file intact. Stickers are never guessed: the neutral Media has no
// sticker flag, so a connector that knows passes "sticker" to mediaMessage.
func mediaKind(mimeType, name string) (kind string, mediaType whatsmeow.MediaType) {
	t := baseMIME(mimeType)
	if t == "" || t == "application/octet-stream" {
		if g := mimeForName(name); g != "" {
			t = g
		}
	}
	switch t {
	case "image/jpeg", "image/png":
		return mediaImage, whatsmeow.MediaImage
	case "video/mp4", "video/3gpp":
		return mediaVideo, whatsmeow.MediaVideo
	case "audio/ogg", "audio/opus", "audio/mpeg", "audio/mp4", "audio/x-m4a", "audio/aac", "audio/amr":
		return mediaAudio, whatsmeow.MediaAudio
	}
	return mediaDocument, whatsmeow.MediaDocument
}

// voiceMIME is the type WhatsApp requires of a voice note.
const voiceMIME = "audio/ogg; codecs=opus"

// mediaMessage builds the message for an uploaded attachment. kind is
// image, video, audio, document or sticker (anything else is sent as a
// document). Ogg/Opus audio goes as a voice note. Audio and stickers carry
// no caption on WhatsApp: the caller sends caption text separately.
func mediaMessage(kind string, up whatsmeow.UploadResponse, mimeType, name, caption string, quoted *msgRef) *waE2E.Message {
	ctx := replyContext(quoted)
	opt := func(s string) *string {
		if s == "" {
			return nil
		}
		return proto.String(s)
	}
	if mimeType == "" {
		mimeType = mimeForName(name)
	}
	switch kind {
	case mediaImage:
		return &waE2E.Message{ImageMessage: &waE2E.ImageMessage{
			URL: proto.String(up.URL), DirectPath: proto.String(up.DirectPath), MediaKey: up.MediaKey,
			FileEncSHA256: up.FileEncSHA256, FileSHA256: up.FileSHA256, FileLength: proto.Uint64(up.FileLength),
			Mimetype: proto.String(orDefault(mimeType, "image/jpeg")), Caption: opt(caption), ContextInfo: ctx,
		}}
	case mediaVideo:
		return &waE2E.Message{VideoMessage: &waE2E.VideoMessage{
			URL: proto.String(up.URL), DirectPath: proto.String(up.DirectPath), MediaKey: up.MediaKey,
			FileEncSHA256: up.FileEncSHA256, FileSHA256: up.FileSHA256, FileLength: proto.Uint64(up.FileLength),
			Mimetype: proto.String(orDefault(mimeType, "video/mp4")), Caption: opt(caption), ContextInfo: ctx,
		}}
	case mediaAudio:
		t := orDefault(mimeType, "audio/mpeg")
		ptt := false
		if b := baseMIME(t); b == "audio/ogg" || b == "audio/opus" {
			t, ptt = voiceMIME, true
		}
		return &waE2E.Message{AudioMessage: &waE2E.AudioMessage{
			URL: proto.String(up.URL), DirectPath: proto.String(up.DirectPath), MediaKey: up.MediaKey,
			FileEncSHA256: up.FileEncSHA256, FileSHA256: up.FileSHA256, FileLength: proto.Uint64(up.FileLength),
			Mimetype: proto.String(t), PTT: proto.Bool(ptt), ContextInfo: ctx,
		}}
	case mediaSticker:
		return &waE2E.Message{StickerMessage: &waE2E.StickerMessage{
			URL: proto.String(up.URL), DirectPath: proto.String(up.DirectPath), MediaKey: up.MediaKey,
			FileEncSHA256: up.FileEncSHA256, FileSHA256: up.FileSHA256, FileLength: proto.Uint64(up.FileLength),
			Mimetype: proto.String(orDefault(mimeType, "image/webp")), ContextInfo: ctx,
		}}
	}
	fileName := cleanFileName(name)
	if fileName == "" {
		fileName = "file" + extensionFor(mimeType)
	}
	return &waE2E.Message{DocumentMessage: &waE2E.DocumentMessage{
		URL: proto.String(up.URL), DirectPath: proto.String(up.DirectPath), MediaKey: up.MediaKey,
		FileEncSHA256: up.FileEncSHA256, FileSHA256: up.FileSHA256, FileLength: proto.Uint64(up.FileLength),
		Mimetype: proto.String(orDefault(mimeType, "application/octet-stream")),
		FileName: proto.String(fileName), Title: proto.String(fileName), Caption: opt(caption), ContextInfo: ctx,
	}}
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
