// Queues a message on a disk spool through the installed library, reads it back.
// Usage: consumer DIR; prints the message's id, exits 0 when it reads back intact.
#include <slimta/disk_storage.h>
#include <slimta/open_storage.h>

#include <iostream>

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  auto storage = slimta::open_storage(std::string("disk:") + argv[1], {}, /*create=*/true);
  slimta::Envelope env;
  env.sender = "a@example.com";
  env.recipients = {"b@example.org"};
  env.parse("Subject: installed\r\n\r\nhello\r\n");
  std::string id = storage->write(env, 0);
  slimta::QueuedMessage got = storage->get(id);
  if (got.envelope.flatten() != env.flatten() || got.envelope.recipients != env.recipients) {
    std::cerr << "read back something else\n";
    return 1;
  }
  std::cout << id << "\n";
  return 0;
}
