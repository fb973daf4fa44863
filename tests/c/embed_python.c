/* A program that embeds CPython through Debian's shared libpython3.11 (as
 * uWSGI, Blender or a PyInstaller bundle do): the interpreter lives in a
 * library, not in the executable. Runs argv[1] as Python source.
 * Built by the tests against libpython3.11-dev. */
#include <Python.h>

int main(int argc, char **argv) {
    Py_Initialize();
    int rc = PyRun_SimpleString(argc > 1 ? argv[1] : "pass");
    Py_Finalize();
    return rc;
}
