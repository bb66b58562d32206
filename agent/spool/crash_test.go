package spool

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
)

const crashChildEnv = "VIGIL_SPOOL_CRASH_DIR"

// TestCrashChild is the process TestKillNineLosesNothing kills: it appends
// events forever, syncing every 50, and prints each sequence number once
// Append has returned.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashChildEnv)
	if dir == "" {
		t.Skip("runs only as the child of TestKillNineLosesNothing")
	}
	s, err := Open(dir, 0)
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(2)
	}
	w := bufio.NewWriter(os.Stdout)
	for i := 0; ; i++ {
		seq, err := s.Append(&vigilpb.Event{Kind: vigilpb.EventKind_EVENT_KIND_EXEC, Message: strings.Repeat("x", i%300)})
		if err != nil {
			fmt.Println("append:", err)
			os.Exit(2)
		}
		if i%50 == 0 {
			s.Sync()
		}
		fmt.Fprintln(w, seq)
		w.Flush()
	}
}

// TestKillNineLosesNothing kills an appending process with SIGKILL twice
// and checks that the reopened spool holds every event whose Append
// returned, with consecutive sequence numbers and no duplicates.
func TestKillNineLosesNothing(t *testing.T) {
	dir := t.TempDir()
	var lastReported uint64
	for round := 0; round < 2; round++ {
		lastReported = runAndKill(t, dir, lastReported)
	}

	s, err := Open(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	evs := readAll(t, s, 0)
	if len(evs) == 0 || uint64(len(evs)) < lastReported {
		t.Fatalf("spool holds %d events, the children reported %d appended", len(evs), lastReported)
	}
	wantConsecutive(t, evs, 1, uint64(len(evs)))
}

// runAndKill starts the child, lets it append past from+1500, kills it, and
// returns the last sequence it reported (it may have appended one more).
func runAndKill(t *testing.T, dir string, from uint64) uint64 {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}

	sc := bufio.NewScanner(out)
	var last uint64
	killed := false
	for sc.Scan() {
		seq, err := strconv.ParseUint(sc.Text(), 10, 64)
		if err != nil {
			continue // test framework output
		}
		if seq != last+1 && last != 0 {
			t.Fatalf("child reported seq %d after %d", seq, last)
		}
		if last == 0 && seq <= from {
			t.Fatalf("child reused seq %d, the previous one reported up to %d", seq, from)
		}
		last = seq
		if !killed && seq >= from+1500 {
			cmd.Process.Signal(syscall.SIGKILL)
			killed = true
		}
	}
	cmd.Wait()
	return last
}
