package bench

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// workerEnv names the worker mode when this program runs as a worker.
const workerEnv = "VIGIL_BENCH_WORKER"

// MaybeRunWorker runs the worker mode named in the environment and exits;
// it returns at once when the program was not started as a worker. Call it
// first in main and in TestMain.
func MaybeRunWorker() {
	mode := os.Getenv(workerEnv)
	if mode == "" {
		return
	}
	if err := runWorker(mode, os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "worker %s: %v\n", mode, err)
		os.Exit(1)
	}
	os.Exit(0)
}

func runWorker(mode string, args []string) error {
	switch mode {
	case "connect":
		return workConnect(args)
	case "exec":
		return workExec(args)
	case "storm":
		return workStorm(args)
	case "probe":
		return workProbe(args)
	case "hold":
		return workHold(args)
	case "sleep":
		time.Sleep(time.Hour)
		return nil
	case "fanout":
		return workFanout(args)
	}
	return fmt.Errorf("unknown mode %q", mode)
}

// workConnect: PROTO NETNS TARGET N. Enters network namespace NETNS ("-"
// for none) on a locked thread, then runs N connect operations to TARGET
// and prints the mean wall and CPU nanoseconds per operation.
func workConnect(args []string) error {
	if len(args) != 4 {
		return errors.New("want PROTO NETNS TARGET N")
	}
	n, err := strconv.Atoi(args[3])
	if err != nil {
		return fmt.Errorf("parse count: %w", err)
	}
	runtime.LockOSThread()
	if err := enterNetns(args[1]); err != nil {
		return err
	}
	op, err := connectOp(args[0], netip.MustParseAddrPort(args[2]))
	if err != nil {
		return err
	}
	for range n / 20 { // warm up
		if err := op(); err != nil {
			return err
		}
	}
	m := startMeter()
	for range n {
		if err := op(); err != nil {
			return err
		}
	}
	return m.print(n)
}

// meter measures wall time and the CPU time of this process and its
// waited-for children: CPU time is what an operation costs, wall time also
// counts waiting for a CPU that other work on the machine holds.
type meter struct {
	start time.Time
	cpu   time.Duration
}

func startMeter() meter { return meter{start: time.Now(), cpu: cpuTime()} }

// print prints the mean wall and CPU nanoseconds of n operations.
func (m meter) print(n int) error {
	wall := time.Since(m.start)
	cpu := cpuTime() - m.cpu
	_, err := fmt.Println(float64(wall.Nanoseconds())/float64(n), float64(cpu.Nanoseconds())/float64(n))
	return err
}

func cpuTime() time.Duration {
	var total time.Duration
	for _, who := range []int{unix.RUSAGE_SELF, unix.RUSAGE_CHILDREN} {
		var ru unix.Rusage
		if err := unix.Getrusage(who, &ru); err == nil {
			total += time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		}
	}
	return total
}

// enterNetns moves the calling thread (locked by the caller) into the
// named network namespace; "-" stays.
func enterNetns(name string) error {
	if name == "-" {
		return nil
	}
	fd, err := unix.Open("/run/netns/"+name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open netns: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("enter netns %s: %w", name, err)
	}
	return nil
}

// connectOp returns one operation: for tcp socket, connect and close; for
// udp socket, connect, a one-byte send and close (so a packet filter sees
// the flow too).
func connectOp(proto string, target netip.AddrPort) (func() error, error) {
	sa := &unix.SockaddrInet4{Addr: target.Addr().As4(), Port: int(target.Port())}
	switch proto {
	case "tcp":
		return func() error { return dialOnce(unix.SOCK_STREAM, sa, nil) }, nil
	case "udp":
		return func() error { return dialOnce(unix.SOCK_DGRAM, sa, []byte{1}) }, nil
	}
	return nil, fmt.Errorf("unknown protocol %q", proto)
}

func dialOnce(typ int, sa unix.Sockaddr, payload []byte) error {
	fd, err := unix.Socket(unix.AF_INET, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Connect(fd, sa); err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	if payload != nil {
		if _, err := unix.Write(fd, payload); err != nil {
			return fmt.Errorf("send: %w", err)
		}
	}
	return nil
}

// workExec: PATH N. Forks and execs PATH N times, waiting for each, and
// prints the mean wall and CPU (its own and the children's) nanoseconds
// per fork+exec+wait.
func workExec(args []string) error {
	if len(args) != 2 {
		return errors.New("want PATH N")
	}
	n, err := strconv.Atoi(args[1])
	if err != nil {
		return fmt.Errorf("parse count: %w", err)
	}
	run := func() error {
		pid, err := syscall.ForkExec(args[0], []string{args[0]}, &syscall.ProcAttr{})
		if err != nil {
			return fmt.Errorf("fork exec: %w", err)
		}
		var ws syscall.WaitStatus
		_, err = syscall.Wait4(pid, &ws, 0, nil)
		return err
	}
	for range max(n/20, 1) {
		if err := run(); err != nil {
			return err
		}
	}
	m := startMeter()
	for range n {
		if err := run(); err != nil {
			return err
		}
	}
	return m.print(n)
}

// probeEvery paces the probe's connects. Every connect is an event the
// agent ships and the server stores; an unpaced loop floods both and delays
// everything else on the agent's stream, the acknowledgements the other
// reaction steps wait for included. It bounds the probe's resolution.
const probeEvery = 500 * time.Microsecond

// workProbe: FROM TARGET. Connects from address FROM to TARGET every
// probeEvery and prints "ok|eperm MONOTONIC_NS" whenever the outcome
// changes, until stdin closes.
func workProbe(args []string) error {
	if len(args) != 2 {
		return errors.New("want FROM TARGET")
	}
	from := &unix.SockaddrInet4{Addr: netip.MustParseAddr(args[0]).As4()}
	to := netip.MustParseAddrPort(args[1])
	sa := &unix.SockaddrInet4{Addr: to.Addr().As4(), Port: int(to.Port())}
	stop := stdinClosed()
	last := ""
	for {
		select {
		case <-stop:
			return nil
		default:
		}
		state, err := probeOnce(from, sa)
		if err != nil {
			return err
		}
		if state != last {
			fmt.Printf("%s %d\n", state, monoNow())
			last = state
		}
		time.Sleep(probeEvery)
	}
}

func probeOnce(from, to unix.Sockaddr) (string, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, from); err != nil {
		return "", fmt.Errorf("bind: %w", err)
	}
	err = unix.Connect(fd, to)
	switch {
	case err == nil:
		return "ok", nil
	case errors.Is(err, unix.EPERM):
		return "eperm", nil
	}
	return "", fmt.Errorf("connect: %w", err)
}

// workHold: FROM TARGET. Connects from FROM to TARGET, prints "connected",
// and waits for the connection to end.
func workHold(args []string) error {
	if len(args) != 2 {
		return errors.New("want FROM TARGET")
	}
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(args[0])}}
	c, err := d.Dial("tcp", args[1])
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	fmt.Println("connected")
	_, _ = c.Read(make([]byte, 1))
	return nil
}

// stdinClosed is closed when stdin reaches end of file.
func stdinClosed() <-chan struct{} {
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(done)
	}()
	return done
}
