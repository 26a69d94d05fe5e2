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
	md := attachment(mediaImage, m.GetMimetype(), "image/jpeg", "image", m.GetCaption(), m.GetFileLength(),
		m.GetDirectPath(), m.GetURL(), m.GetMediaKey(), m.GetFileEncSHA256(), m.GetFileSHA256())
	md.Width, md.Height, md.Thumbnail = int(m.GetWidth()), int(m.GetHeight()), thumbnailFromWA(m.GetJPEGThumbnail())
	return md, "Photo"
}

func videoMedia(m *waE2E.VideoMessage, note bool) (bridge.Media, string) {
	md := attachment(mediaVideo, m.GetMimetype(), "video/mp4", "video", m.GetCaption(), m.GetFileLength(),
		m.GetDirectPath(), m.GetURL(), m.GetMediaKey(), m.GetFileEncSHA256(), m.GetFileSHA256())
	md.Width, md.Height, md.DurationMS = int(m.GetWidth()), int(m.GetHeight()), int64(m.GetSeconds())*1000
	md.Thumbnail = thumbnailFromWA(m.GetJPEGThumbnail())
	label := "Video"
	switch {
	case note:
		md.Kind, label = bridge.MediaVideoNote, "Video message"
	case m.GetGifPlayback():
		md.Kind, label = bridge.MediaGIF, "GIF"
	}
	return md, label
}

func audioMedia(m *waE2E.AudioMessage) (bridge.Media, string) {
	base, label := "audio", "Audio"
	if m.GetPTT() {
		base, label = "voice", "Voice message"
	}
	md := attachment(mediaAudio, m.GetMimetype(), "audio/ogg", base, "", m.GetFileLength(),
		m.GetDirectPath(), m.GetURL(), m.GetMediaKey(), m.GetFileEncSHA256(), m.GetFileSHA256())
	md.DurationMS = int64(m.GetSeconds()) * 1000
	if m.GetPTT() {
		md.Kind, md.Waveform = bridge.MediaVoice, waveformFromWA(m.GetWaveform())
	}
	return md, label
}

// WhatsApp's waveform is 64 samples of 0 to 100; the neutral one's
// samples go 0 to 1024, as Matrix's voice messages have them.
const (
	waWaveformMax      = 100
	waWaveformSamples  = 64
	neutralWaveformMax = 1024
)

// waveformFromWA scales WhatsApp's waveform to the neutral range.
func waveformFromWA(w []byte) []int {
	if len(w) == 0 {
		return nil
	}
	out := make([]int, len(w))
	for i, v := range w {
		out[i] = min(int(v), waWaveformMax) * neutralWaveformMax / waWaveformMax
	}
	return out
}

// waveformToWA resamples a neutral waveform to WhatsApp's 64 samples of
// 0 to 100 (nil for none), taking each sample's loudest source value so
// peaks survive.
func waveformToWA(w []int) []byte {
	if len(w) == 0 {
		return nil
	}
	out := make([]byte, waWaveformSamples)
	for i := range out {
		from, to := i*len(w)/waWaveformSamples, (i+1)*len(w)/waWaveformSamples
		to = max(to, from+1)
		peak := 0
		for _, v := range w[from:min(to, len(w))] {
			peak = max(peak, v)
		}
		out[i] = byte(min(max(peak, 0), neutralWaveformMax) * waWaveformMax / neutralWaveformMax)
	}
	return out
}

// thumbnailFromWA is a message's JPEG preview, if it is one the core
// carries.
func thumbnailFromWA(jpeg []byte) []byte {
	if !isJPEG(jpeg) || len(jpeg) > bridge.MaxThumbnailBytes {
		return nil
	}
	return jpeg
}

// thumbnailToWA is the preview WhatsApp's apps show while they download:
// a JPEG, or none.
func thumbnailToWA(m bridge.Media) []byte {
	if !isJPEG(m.Thumbnail) {
		return nil
	}
	return m.Thumbnail
}

func isJPEG(b []byte) bool { return len(b) > 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF }

func documentMedia(m *waE2E.DocumentMessage) (bridge.Media, string) {
	md := attachment(mediaDocument, m.GetMimetype(), "application/octet-stream", "document", m.GetCaption(), m.GetFileLength(),
		m.GetDirectPath(), m.GetURL(), m.GetMediaKey(), m.GetFileEncSHA256(), m.GetFileSHA256())
	md.Thumbnail = thumbnailFromWA(m.GetJPEGThumbnail())
	for _, n := range []string{m.GetFileName(), m.GetTitle()} {
		if n = cleanFileName(n); n != "" {
			md.Name = n
			break
		}
	}
	return md, "📄 " + md.Name
}

func stickerMedia(m *waE2E.StickerMessage) (bridge.Media, string) {
	md := attachment(mediaSticker, m.GetMimetype(), "image/webp", "sticker", "", m.GetFileLength(),
		m.GetDirectPath(), m.GetURL(), m.GetMediaKey(), m.GetFileEncSHA256(), m.GetFileSHA256())
	md.Kind, md.Width, md.Height = bridge.MediaSticker, int(m.GetWidth()), int(m.GetHeight())
	return md, "Sticker"
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
// videos, audio WhatsApp plays as audio (a voice note when it is one, see
// mediaMessage), a WebP sticker as a sticker, everything else (GIF, other
// WebP, other formats) as a document, which keeps the file intact.
func mediaKind(m bridge.Media) (kind string, mediaType whatsmeow.MediaType) {
	t := baseMIME(m.MIME)
	if t == "" || t == "application/octet-stream" {
		if g := mimeForName(m.Name); g != "" {
			t = g
		}
	}
	if m.Kind == bridge.MediaSticker && t == "image/webp" {
		// WhatsApp shows only WebP as stickers; another image goes as one.
		return mediaSticker, whatsmeow.MediaImage
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

// mediaMessage builds the message for an uploaded attachment m. kind is
// image, video, audio, document or sticker (anything else is sent as a
// document). A voice note in Ogg/Opus goes as one; in another format
// WhatsApp would refuse it as a voice note, so it goes as audio. Audio and
// stickers carry no caption on WhatsApp: the caller sends caption text
// separately.
func mediaMessage(kind string, up whatsmeow.UploadResponse, m bridge.Media, caption string, quoted *msgRef) *waE2E.Message {
	ctx := replyContext(quoted)
	mimeType, name := m.MIME, m.Name
	u32 := func(n int64) *uint32 {
		if n <= 0 {
			return nil
		}
		return proto.Uint32(uint32(min(n, 1<<32-1)))
	}
	seconds := u32((m.DurationMS + 500) / 1000)
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
			Width: u32(int64(m.Width)), Height: u32(int64(m.Height)), JPEGThumbnail: thumbnailToWA(m),
		}}
	case mediaVideo:
		var gif *bool
		if m.Kind == bridge.MediaGIF {
			gif = proto.Bool(true)
		}
		return &waE2E.Message{VideoMessage: &waE2E.VideoMessage{
			URL: proto.String(up.URL), DirectPath: proto.String(up.DirectPath), MediaKey: up.MediaKey,
			FileEncSHA256: up.FileEncSHA256, FileSHA256: up.FileSHA256, FileLength: proto.Uint64(up.FileLength),
			Mimetype: proto.String(orDefault(mimeType, "video/mp4")), Caption: opt(caption), ContextInfo: ctx,
			Width: u32(int64(m.Width)), Height: u32(int64(m.Height)), Seconds: seconds, GifPlayback: gif,
			JPEGThumbnail: thumbnailToWA(m),
		}}
	case mediaAudio:
		t := orDefault(mimeType, "audio/mpeg")
		ptt := false
		var waveform []byte
		if b := baseMIME(t); m.Kind == bridge.MediaVoice && (b == "audio/ogg" || b == "audio/opus") {
			t, ptt, waveform = voiceMIME, true, waveformToWA(m.Waveform)
		}
		return &waE2E.Message{AudioMessage: &waE2E.AudioMessage{
			URL: proto.String(up.URL), DirectPath: proto.String(up.DirectPath), MediaKey: up.MediaKey,
			FileEncSHA256: up.FileEncSHA256, FileSHA256: up.FileSHA256, FileLength: proto.Uint64(up.FileLength),
			Mimetype: proto.String(t), PTT: proto.Bool(ptt), ContextInfo: ctx, Seconds: seconds, Waveform: waveform,
		}}
	case mediaSticker:
		return &waE2E.Message{StickerMessage: &waE2E.StickerMessage{
			URL: proto.String(up.URL), DirectPath: proto.String(up.DirectPath), MediaKey: up.MediaKey,
			FileEncSHA256: up.FileEncSHA256, FileSHA256: up.FileSHA256, FileLength: proto.Uint64(up.FileLength),
			Mimetype: proto.String(orDefault(mimeType, "image/webp")), ContextInfo: ctx,
			Width: u32(int64(m.Width)), Height: u32(int64(m.Height)),
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
		JPEGThumbnail: thumbnailToWA(m),
	}}
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
