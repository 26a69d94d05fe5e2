package fakewa

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"go.mau.fi/whatsmeow/proto/waWa6"
	"go.mau.fi/whatsmeow/socket"
	"go.mau.fi/whatsmeow/util/keys"
	"golang.org/x/crypto/curve25519"
	"golang.org/x/crypto/hkdf"
	"google.golang.org/protobuf/proto"
)

// The responder's half of WhatsApp's Noise_XX_25519_AESGCM_SHA256: the
// mirror image of whatsmeow's socket.NoiseHandshake, whose salt is not
// exported, so it is written out here.
type noiseState struct {
	hash    []byte
	salt    []byte
	aead    cipher.AEAD
	counter uint32
}

func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

func nonce(counter uint32) []byte {
	iv := make([]byte, 12)
	binary.BigEndian.PutUint32(iv[8:], counter)
	return iv
}

func (n *noiseState) start(header []byte) error {
	// The pattern string is exactly 32 bytes: used as the hash unhashed.
	n.hash = []byte(socket.NoiseStartPattern)
	n.salt = n.hash
	var err error
	n.aead, err = newGCM(n.hash)
	n.authenticate(header)
	return err
}

func (n *noiseState) authenticate(data []byte) {
	h := sha256.Sum256(append(append([]byte{}, n.hash...), data...))
	n.hash = h[:]
}

func (n *noiseState) encrypt(plain []byte) []byte {
	ct := n.aead.Seal(nil, nonce(n.counter), plain, n.hash)
	n.counter++
	n.authenticate(ct)
	return ct
}

func (n *noiseState) decrypt(ct []byte) ([]byte, error) {
	pt, err := n.aead.Open(nil, nonce(n.counter), ct, n.hash)
	n.counter++
	if err == nil {
		n.authenticate(ct)
	}
	return pt, err
}

func expand(salt, secret []byte) (first, second []byte, err error) {
	r := hkdf.New(sha256.New, secret, salt, nil)
	first, second = make([]byte, 32), make([]byte, 32)
	if _, err = io.ReadFull(r, first); err == nil {
		_, err = io.ReadFull(r, second)
	}
	return
}

func (n *noiseState) mixDH(priv, pub *[32]byte) error {
	secret, err := curve25519.X25519(priv[:], pub[:])
	if err != nil {
		return err
	}
	n.counter = 0
	salt, key, err := expand(n.salt, secret)
	if err != nil {
		return err
	}
	n.salt = salt
	n.aead, err = newGCM(key)
	return err
}

// transport is an established Noise session: one key and counter each way.
type transport struct {
	read, write           cipher.AEAD
	readCount, writeCount uint32
}

func (t *transport) open(frame []byte) ([]byte, error) {
	pt, err := t.read.Open(nil, nonce(t.readCount), frame, nil)
	t.readCount++
	return pt, err
}

func (t *transport) seal(plain []byte) []byte {
	ct := t.write.Seal(nil, nonce(t.writeCount), plain, nil)
	t.writeCount++
	return ct
}

// frameReader reads the client's length-prefixed frames; the first comes
// after the 4-byte "WA" connection header.
type frameReader interface {
	readFrame() ([]byte, error)
	writeFrame([]byte) error
}

// serverHandshake runs the responder's side and returns the session and
// the client's static key and payload.
func serverHandshake(fr frameReader, p *PKI) (*transport, [32]byte, *waWa6.ClientPayload, error) {
	var clientStatic [32]byte
	var ns noiseState
	if err := ns.start(socket.WAConnHeader); err != nil {
		return nil, clientStatic, nil, err
	}
	first, err := fr.readFrame()
	if err != nil {
		return nil, clientStatic, nil, err
	}
	var hello waWa6.HandshakeMessage
	if err := proto.Unmarshal(first, &hello); err != nil {
		return nil, clientStatic, nil, fmt.Errorf("client hello: %w", err)
	}
	ce := hello.GetClientHello().GetEphemeral()
	if len(ce) != 32 {
		return nil, clientStatic, nil, errors.New("client hello without a 32-byte ephemeral key")
	}
	clientEph := (*[32]byte)(ce)
	ns.authenticate(ce)
	se := keys.NewKeyPair()
	ns.authenticate(se.Pub[:])
	if err := ns.mixDH(se.Priv, clientEph); err != nil {
		return nil, clientStatic, nil, err
	}
	staticCT := ns.encrypt(p.Static.Pub[:])
	if err := ns.mixDH(p.Static.Priv, clientEph); err != nil {
		return nil, clientStatic, nil, err
	}
	certCT := ns.encrypt(p.CertChain)
	reply, err := proto.Marshal(&waWa6.HandshakeMessage{ServerHello: &waWa6.HandshakeMessage_ServerHello{
		Ephemeral: se.Pub[:], Static: staticCT, Payload: certCT,
	}})
	if err != nil {
		return nil, clientStatic, nil, err
	}
	if err := fr.writeFrame(reply); err != nil {
		return nil, clientStatic, nil, err
	}
	finishRaw, err := fr.readFrame()
	if err != nil {
		return nil, clientStatic, nil, err
	}
	var finish waWa6.HandshakeMessage
	if err := proto.Unmarshal(finishRaw, &finish); err != nil {
		return nil, clientStatic, nil, fmt.Errorf("client finish: %w", err)
	}
	cs, err := ns.decrypt(finish.GetClientFinish().GetStatic())
	if err != nil || len(cs) != 32 {
		return nil, clientStatic, nil, fmt.Errorf("client static key does not decrypt: %v", err)
	}
	copy(clientStatic[:], cs)
	if err := ns.mixDH(se.Priv, &clientStatic); err != nil {
		return nil, clientStatic, nil, err
	}
	payloadRaw, err := ns.decrypt(finish.GetClientFinish().GetPayload())
	if err != nil {
		return nil, clientStatic, nil, fmt.Errorf("client payload does not decrypt: %w", err)
	}
	var payload waWa6.ClientPayload
	if err := proto.Unmarshal(payloadRaw, &payload); err != nil {
		return nil, clientStatic, nil, fmt.Errorf("client payload: %w", err)
	}
	clientWrite, serverWrite, err := expand(ns.salt, nil)
	if err != nil {
		return nil, clientStatic, nil, err
	}
	t := &transport{}
	if t.read, err = newGCM(clientWrite); err != nil {
		return nil, clientStatic, nil, err
	}
	if t.write, err = newGCM(serverWrite); err != nil {
		return nil, clientStatic, nil, err
	}
	return t, clientStatic, &payload, nil
}
