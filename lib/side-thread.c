/* A second thread for one call at a time (lib/side-thread.h says why). */
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#include "lib/side-thread.h"

struct side_thread {
  pthread_t thread;
  pthread_mutex_t lock;
  pthread_cond_t wake;          /* a call came, or stop */
  pthread_cond_t done;          /* the call returned */
  void (*fn) (void *);          /* the call in hand, or NULL */
  void *arg;
  bool stopping;
};

static void *
run (void *opaque)
{
  struct side_thread *t = opaque;

  pthread_mutex_lock (&t->lock);
  for (;;) {
    while (!t->fn && !t->stopping)
      pthread_cond_wait (&t->wake, &t->lock);
    if (!t->fn)
      break;
    void (*fn) (void *) = t->fn;
    void *arg = t->arg;
    pthread_mutex_unlock (&t->lock);
    fn (arg);
    pthread_mutex_lock (&t->lock);
    t->fn = NULL;
    pthread_cond_signal (&t->done);
  }
  pthread_mutex_unlock (&t->lock);
  return NULL;
}

struct side_thread *
side_thread_start (void)
{
  struct side_thread *t = calloc (1, sizeof *t);
  if (!t)
    return NULL;
  pthread_mutex_init (&t->lock, NULL);
  pthread_cond_init (&t->wake, NULL);
  pthread_cond_init (&t->done, NULL);
  if (pthread_create (&t->thread, NULL, run, t) != 0) {
    pthread_cond_destroy (&t->done);
    pthread_cond_destroy (&t->wake);
    pthread_mutex_destroy (&t->lock);
    free (t);
    return NULL;
  }
  return t;
}

void
side_thread_run (struct side_thread *t, void (*fn) (void *), void *arg)
{
  pthread_mutex_lock (&t->lock);
  t->fn = fn;
  t->arg = arg;
  pthread_cond_signal (&t->wake);
  pthread_mutex_unlock (&t->lock);
}

void
side_thread_wait (struct side_thread *t)
{
  pthread_mutex_lock (&t->lock);
  while (t->fn)
    pthread_cond_wait (&t->done, &t->lock);
  pthread_mutex_unlock (&t->lock);
}

void
side_thread_stop (struct side_thread *t)
{
  if (!t)
    return;
  pthread_mutex_lock (&t->lock);
  t->stopping = true;
  pthread_cond_signal (&t->wake);
  pthread_mutex_unlock (&t->lock);
  pthread_join (t->thread, NULL);
  pthread_cond_destroy (&t->done);
  pthread_cond_destroy (&t->wake);
  pthread_mutex_destroy (&t->lock);
  free (t);
}
