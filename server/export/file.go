package export

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// Defaults for a FileSink.
const (
	DefaultFileMaxBytes = 100 << 20
	DefaultFileKeep     = 5
)

// FileSink writes one JSON record per line to a file, rotating it when it
// would grow past a size: PATH becomes PATH.1, PATH.1 becomes PATH.2, and so
// on, keeping at most keep rotated files. It is not safe for concurrent use;
// the Exporter calls it from one goroutine.
type FileSink struct {
	path     string
	maxBytes int64
	keep     int
	f        *os.File
	w        *bufio.Writer
	size     int64 // bytes in the current file
}

// NewFileSink opens (or appends to) path, created with mode 0600. maxBytes
// 0 means DefaultFileMaxBytes; keep is the number of rotated files kept.
func NewFileSink(path string, maxBytes int64, keep int) (*FileSink, error) {
	if maxBytes <= 0 {
		maxBytes = DefaultFileMaxBytes
	}
	if keep < 0 {
		return nil, fmt.Errorf("export file %s: negative keep %d", path, keep)
	}
	s := &FileSink{path: path, maxBytes: maxBytes, keep: keep}
	if err := s.open(); err != nil {
		return nil, err
	}
	return s, nil
}

// Name implements Sink.
func (s *FileSink) Name() string { return "jsonl:" + s.path }

// open opens the current file for appending.
func (s *FileSink) open() error {
	f, err := os.OpenFile(s.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open export file: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("stat export file: %w", err)
	}
	s.f, s.w, s.size = f, bufio.NewWriterSize(f, 64<<10), st.Size()
	return nil
}

// Write implements Sink. A record larger than the size limit is written to a
// file of its own rather than lost.
func (s *FileSink) Write(_ context.Context, items []Item) (int, error) {
	if s.f == nil {
		if err := s.open(); err != nil {
			return len(items), err
		}
	}
	for i, it := range items {
		line := int64(len(it.JSON)) + 1
		if s.size > 0 && s.size+line > s.maxBytes {
			if err := s.rotate(); err != nil {
				return len(items) - i, err
			}
		}
		s.w.Write(it.JSON)
		if err := s.w.WriteByte('\n'); err != nil {
			return len(items) - i, fmt.Errorf("write export file: %w", err)
		}
		s.size += line
	}
	if err := s.w.Flush(); err != nil {
		return len(items), fmt.Errorf("write export file: %w", err)
	}
	return 0, nil
}

// rotate closes the current file, shifts the rotated ones and opens a new one.
func (s *FileSink) rotate() error {
	if err := s.closeFile(); err != nil {
		return err
	}
	if err := removeIfExists(fmt.Sprintf("%s.%d", s.path, s.keep)); err != nil {
		return err
	}
	for i := s.keep - 1; i >= 1; i-- {
		if err := renameIfExists(fmt.Sprintf("%s.%d", s.path, i), fmt.Sprintf("%s.%d", s.path, i+1)); err != nil {
			return err
		}
	}
	if s.keep > 0 {
		if err := os.Rename(s.path, s.path+".1"); err != nil {
			return fmt.Errorf("rotate export file: %w", err)
		}
	} else if err := removeIfExists(s.path); err != nil {
		return err
	}
	return s.open()
}

// closeFile flushes and closes the current file.
func (s *FileSink) closeFile() error {
	if s.f == nil {
		return nil
	}
	ferr := s.w.Flush()
	serr := s.f.Sync()
	cerr := s.f.Close()
	s.f, s.w = nil, nil
	if err := errors.Join(ferr, serr, cerr); err != nil {
		return fmt.Errorf("close export file: %w", err)
	}
	return nil
}

// Close implements Sink.
func (s *FileSink) Close() error { return s.closeFile() }

func removeIfExists(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("rotate export file: %w", err)
	}
	return nil
}

func renameIfExists(from, to string) error {
	if err := os.Rename(from, to); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("rotate export file: %w", err)
	}
	return nil
}
