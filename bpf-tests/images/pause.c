/* The tests' pod sandbox process (no image can be pulled here): PID 1 of a
 * sandbox, reaps children, exits on SIGTERM or SIGINT. Built static by
 * `cargo xtask test` and packed FROM scratch as localhost/nettune-pause:test. */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_term(int sig) { (void)sig; _exit(0); }

static void on_child(int sig) {
    (void)sig;
    while (waitpid(-1, 0, WNOHANG) > 0) {
    }
}

int main(void) {
    struct sigaction term = {0}, child = {0};
    term.sa_handler = on_term;
    sigaction(SIGTERM, &term, 0);
    sigaction(SIGINT, &term, 0);
    child.sa_handler = on_child;
    child.sa_flags = SA_NOCLDSTOP;
    sigaction(SIGCHLD, &child, 0);
    for (;;) {
        pause();
    }
}
